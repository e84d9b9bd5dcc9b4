"""Bytes on disk: chunked reads, hashing, and writes that land atomically or not at all."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import AlreadyExists, DataLoss, NotFound, TooLarge
from common.names import check_name, resolve_in

TMP_PREFIX = ".p2p-tmp-"
PART_MARK = ".p2p-part-"
HASH_BLOCK = 4 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc(threshold: int = 8 * 1024 * 1024) -> bool:
    """Keep megabyte-sized buffers in the heap instead of a fresh mmap for each one.

    glibc serves large blocks (each chunk's bytes, each gRPC slice) with mmap and
    returns them with munmap, so every streamed byte costs page faults twice;
    measured on loopback this halves transfer throughput. Freed blocks stay
    reusable instead, bounded by what is in flight at once; two arenas keep the
    blocks freed by one thread reusable by the others. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(
        [mallopt(_M_MMAP_THRESHOLD, threshold), mallopt(_M_TRIM_THRESHOLD, 2 * threshold), mallopt(_M_ARENA_MAX, 2)]
    )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (flat memory)."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def open_shared(folder: str | os.PathLike, name: str):
    """Open a regular file inside folder for reading; refuse escapes and non-files."""
    path = resolve_in(folder, name)
    try:
        fh = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise NotFound(f"no file {name!r} in this peer's shared folder") from None
    except IsADirectoryError:
        raise NotFound(f"{name!r} is not a regular file") from None
    if not os.path.isfile(path):
        fh.close()
        raise NotFound(f"{name!r} is not a regular file")
    return fh


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


class AtomicFile:
    """A file written under a hidden temporary name, then renamed into place.

    Nothing is visible under the final name until commit() checked the size and
    the sha256; abort() (or leaving the `with` block on an error) removes the
    temporary file.
    """

    def __init__(
        self, folder: str | os.PathLike, name: str, *, overwrite: bool = False, max_bytes: int | None = None
    ) -> None:
        self.folder = Path(folder)
        self.name = check_name(name)
        self.final = resolve_in(self.folder, name)
        self.overwrite = overwrite
        self.max_bytes = max_bytes
        if self.final.exists() and not overwrite:
            raise AlreadyExists(f"{name!r} already exists; pass --overwrite to replace it")
        self.tmp = self.folder / f"{TMP_PREFIX}{secrets.token_hex(6)}-{name}"[:255]
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append data, refusing to grow beyond max_bytes."""
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise TooLarge(f"upload exceeds this peer's limit of {self.max_bytes} bytes")
        self._digest.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self, expected_sha256: str = "", expected_size: int | None = None) -> Path:
        """Verify and rename into place; DataLoss (and nothing kept) on a mismatch."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if expected_size is not None and expected_size != self.size:
            raise DataLoss(f"received {self.size} bytes, expected {expected_size}")
        if expected_sha256 and expected_sha256 != self.sha256:
            raise DataLoss(f"sha256 mismatch: got {self.sha256}, expected {expected_sha256}")
        return move_into_place(self.tmp, self.final, self.overwrite)

    def abort(self) -> None:
        """Drop the temporary file; safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


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
            raise AlreadyExists(f"{final.name!r} already exists; pass --overwrite to replace it") from None
        os.unlink(tmp)
    return final


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries left by a killed process; return how many."""
    removed = 0
    for entry in os.scandir(folder):
        if entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed += 1
    return removed


class RateLimiter:
    """Paces bytes to at most `rate` per second across threads (0: unlimited).

    A peer's optional bandwidth cap; tests use it to make a transfer last long
    enough to cut it at a known point.
    """

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def consume(self, n: int) -> None:
        """Account for n bytes; sleep until they fit the rate."""
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + n / self.rate
        if start > now:
            self.sleep(start - now)


def partial_name(target_name: str, sha256: str) -> str:
    """Hidden name of a download in progress, beside its target, keyed by the content hash."""
    return f".{target_name[:200]}{PART_MARK}{sha256[:16]}"


class PartialFile:
    """A download in progress: the target's bytes at their offsets, plus a journal of finished pieces.

    The data file is preallocated to the full size and written in place (pwrite),
    so pieces can land in any order and from any source. The journal's first
    line records size, sha256 and piece size; each later line is the index of a
    piece whose bytes are all written. A re-run with the same target and content
    continues with the pieces not yet listed. The journal is not fsynced: a
    piece lost to a power cut shows up as a sha256 mismatch at the end, which
    discards the partial file rather than ever keeping wrong bytes.
    """

    def __init__(self, target: str | os.PathLike, size: int, sha256: str, piece_size: int) -> None:
        self.target = Path(os.path.abspath(target))
        self.size = size
        self.sha256 = sha256
        base = self.target.parent / partial_name(self.target.name, sha256)
        self.path = base
        self.journal_path = base.with_name(base.name + ".journal")
        header = {"size": size, "sha256": sha256, "piece_size": piece_size}
        self.piece_size, self.done = self._load(header)
        self.pieces = max(1, -(-size // self.piece_size)) if size else 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)
        if not self.journal_path.exists():
            self.journal_path.write_text(json.dumps(header) + "\n", encoding="utf-8")
        self._journal = open(self.journal_path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def _load(self, header: dict) -> tuple[int, set[int]]:
        """Pieces already finished by an earlier run of the same download (same content)."""
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
            old = json.loads(lines[0])
            if (old.get("size"), old.get("sha256")) != (header["size"], header["sha256"]) or not self.path.exists():
                raise ValueError("another content")
            piece_size = int(old["piece_size"])
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            self._remove_files()
            return header["piece_size"], set()
        done = {int(line) for line in lines[1:] if line.strip().isdigit()}
        return piece_size, done

    def _remove_files(self) -> None:
        for path in (self.path, self.journal_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def piece_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of piece index."""
        offset = index * self.piece_size
        return offset, min(self.piece_size, self.size - offset)

    @property
    def done_bytes(self) -> int:
        return sum(self.piece_range(i)[1] for i in self.done)

    def missing(self) -> list[int]:
        return [i for i in range(self.pieces) if i not in self.done]

    def write(self, offset: int, data) -> None:
        """Write data at offset (thread-safe: pwrite needs no shared position)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def mark_done(self, index: int) -> None:
        """Record that piece index is fully written."""
        with self._lock:
            self.done.add(index)
            self._journal.write(f"{index}\n")
            self._journal.flush()

    def read_into(self, buf, offset: int) -> int:
        return os.preadv(self._fd, [buf], offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._journal.close()

    def discard(self) -> None:
        """Drop the partial file and its journal."""
        self.close()
        self._remove_files()

    def commit(self, overwrite: bool) -> Path:
        """Move the finished file into place; AlreadyExists unless overwrite."""
        self.close()
        move_into_place(self.path, self.target, overwrite)
        os.unlink(self.journal_path)
        return self.target


class InOrderHasher(threading.Thread):
    """Hashes a PartialFile piece by piece as the finished prefix grows, overlapping the network.

    Pieces may finish in any order; this thread reads back (from the page cache)
    each piece once every piece before it is done, so the digest is ready a
    moment after the last byte lands.
    """

    def __init__(self, part: PartialFile, block: int = HASH_BLOCK) -> None:
        super().__init__(name="p2p-hasher", daemon=True)
        self.part = part
        self.block = block
        self.digest = hashlib.sha256()
        self.hashed = 0
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._halt = False

    def piece_done(self) -> None:
        """Wake the hasher: the finished prefix may have grown."""
        with self._cond:
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify()

    def run(self) -> None:
        buf = bytearray(self.block)
        view = memoryview(buf)
        part = self.part
        try:
            for index in range(part.pieces):
                with self._cond:
                    while index not in part.done and not self._halt:
                        self._cond.wait(0.5)
                    if self._halt:
                        return
                offset, length = part.piece_range(index)
                end = offset + length
                while offset < end:
                    n = part.read_into(view[: min(self.block, end - offset)], offset)
                    if n <= 0:
                        raise OSError(f"short read at {offset} in {part.path}")
                    self.digest.update(view[:n])
                    offset += n
                    self.hashed += n
        except BaseException as err:  # noqa: BLE001 - reported to the downloading thread
            self.error = err

    def hexdigest(self) -> str:
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()
