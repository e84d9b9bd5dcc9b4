"""A peer's shared folder on disk: safe opens, uploads that land atomically or not at all, pacing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from pathlib import Path

from common.errors import AlreadyExists, DataLoss, NotFound, TooLarge
from common.files import move_into_place
from common.names import check_name, resolve_in

TMP_PREFIX = ".p2p-tmp-"


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
            raise AlreadyExists(f"{name!r} already exists on this peer")
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
