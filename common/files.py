"""Bytes on disk that both sides handle: block hashing, ranged chunked reads, the final rename.

Two digests describe a file's content. sha256 is its name: what users see, what partial
files and the Maestro's directory are keyed by, what the gRPC stream path verifies.
BLAKE3 rides along (computed in the same read, cached beside it): the fast lane verifies
with it, because sha256 alone caps a verified download at about half of raw TCP here
(bench/receiver.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3

from common.errors import AlreadyExists

HASH_BLOCK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (flat memory)."""
    with open(path, "rb", buffering=0) as fh:
        return sha256_fd(fh.fileno())


def sha256_fd(fd: int) -> str:
    """Hex sha256 of an open file's bytes from offset 0, read with pread (its position untouched)."""
    return digest_fd(fd)[0]


def digest_fd(fd: int, *, with_blake3: bool = False, pace: Callable[[int], None] | None = None) -> tuple[str, str]:
    """Hex (sha256, BLAKE3) of an open file's bytes from offset 0 in one pass of pread (its position
    untouched, flat memory); BLAKE3 is "" unless asked for. pace(n), if given, is called after
    each block of n bytes is read (a rate limit that sleeps)."""
    sha = hashlib.sha256()
    b3 = blake3.blake3() if with_blake3 else None
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        if pace is not None:
            pace(n)
        sha.update(view[:n])
        if b3 is not None:
            b3.update(view[:n])
        offset += n
    return sha.hexdigest(), b3.hexdigest() if b3 is not None else ""


def new_digest(kind: str):
    """A fresh hash object: "sha256" or "blake3" (the two a download can verify with)."""
    if kind == "blake3":
        return blake3.blake3()
    if kind == "sha256":
        return hashlib.sha256()
    raise ValueError(f"no digest called {kind!r}")


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


def move_into_place(tmp: str | Path, final: str | Path, overwrite: bool, dir_fd: int | None = None) -> Path:
    """Rename a finished temporary file to its final name in one step.

    Without overwrite the name must still be free at this instant (link fails
    if it appeared meanwhile): AlreadyExists, and the temporary is left to its owner.
    With dir_fd, tmp and final are names inside that open folder (never followed if links).
    """
    at = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    if overwrite:
        os.replace(tmp, final, **at)
    else:
        try:
            os.link(tmp, final, follow_symlinks=False, **at)
        except FileExistsError:
            raise AlreadyExists(f"{Path(final).name!r} already exists") from None
        os.unlink(tmp, dir_fd=dir_fd)
    return Path(final)
