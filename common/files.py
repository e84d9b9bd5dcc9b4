"""Bytes on disk that both sides handle: block hashing, ranged chunked reads, the final rename."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from common.errors import AlreadyExists

HASH_BLOCK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (flat memory)."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def iter_chunks(fh, offset: int, length: int, chunk_size: int, size: int | None = None) -> Iterator[bytes]:
    """Yield the bytes [offset, offset+length) of an open file in chunks (length 0: to the end)."""
    size = os.fstat(fh.fileno()).st_size if size is None else size
    end = size if length == 0 else min(size, offset + length)
    pos = offset
    while pos < end:
        data = os.pread(fh.fileno(), min(chunk_size, end - pos), pos)
        if not data:
            break
        yield data
        pos += len(data)


def move_into_place(tmp: Path, final: Path, overwrite: bool) -> Path:
    """Rename a finished temporary file to its final name in one step.

    Without overwrite the name must still be free at this instant (link fails
    if it appeared meanwhile): AlreadyExists, and the temporary is left to its owner.
    """
    if overwrite:
        os.replace(tmp, final)
    else:
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise AlreadyExists(f"{final.name!r} already exists") from None
        os.unlink(tmp)
    return final
