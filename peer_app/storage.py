"""A peer's shared folder on disk: safe opens, uploads that land atomically or not at all, pacing.

Every access to the folder goes through SharedFolder: by a plain name (common.names), relative
to a descriptor of the folder, without following a symbolic link, and an opened file is checked
with fstat to be what the index lists (a regular file with one link, size and mtime within the
wire's bounds) before a byte is read. So a name swapped for a link between a check and its use,
a link inside the share (to a hidden file, say) or a hardlink to a file kept elsewhere is never
served, and an upload creates and renames files inside the folder only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from common.db import free_bytes
from common.errors import (
    AlreadyExists,
    DataLoss,
    InsufficientStorage,
    InvalidName,
    NotFound,
    P2PError,
    PermissionDenied,
    StorageError,
    TooLarge,
)
from common.fields import mtime_problem, size_problem
from common.files import move_into_place, new_digest
from common.names import check_name, fit_name, is_plain_name

TMP_PREFIX = ".p2p-tmp-"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in the share must not hang the open; fstat refuses it next.
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def storage_error(err: OSError, name: str) -> P2PError:
    """The P2PError for a failed disk operation on name: its reason, never a path."""
    if err.errno == errno.ENAMETOOLONG:
        return InvalidName(f"file name {name!r} is too long for this peer's file system")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"this peer's disk is full; {name!r} was not stored")
    return StorageError(f"this peer cannot access {name!r}: {err.strerror}")


class SharedFolder:
    """One shared folder, reached only by names relative to a descriptor of it, never through a link."""

    def __init__(self, path: str | os.PathLike, *, allow_hardlinks: bool = False) -> None:
        self.path = Path(path)
        self.allow_hardlinks = allow_hardlinks

    @contextmanager
    def descriptor(self) -> Iterator[int]:
        """An open descriptor of the folder (opened per use: a folder replaced meanwhile is seen anew)."""
        try:
            fd = os.open(self.path, _OPEN_DIR)
        except OSError as err:
            raise StorageError(f"this peer's shared folder cannot be opened: {err.strerror}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def refusal(self, name: str, st: os.stat_result) -> P2PError | None:
        """Why the file name with status st is not shared, or None when it is."""
        if not stat.S_ISREG(st.st_mode):
            return NotFound(f"{name!r} is not a regular file")
        if st.st_nlink > 1 and not self.allow_hardlinks:
            return PermissionDenied(
                f"{name!r} has other hard links and is not shared (the operator may allow it: security.allow_hardlinks)"
            )
        if size_problem(st.st_size) or mtime_problem(st.st_mtime):
            return NotFound(f"{name!r} has a size or mtime out of the network's bounds and is not shared")
        return None

    def open(self, name: str) -> tuple[BinaryIO, os.stat_result, str]:
        """Open a shared file for reading: (file, its fstat, its NFC name); refuse links and what is not shared."""
        name = check_name(name)
        with self.descriptor() as dir_fd:
            try:
                fd = os.open(name, _OPEN_READ, dir_fd=dir_fd)
            except FileNotFoundError:
                raise NotFound(f"no file {name!r} in this peer's shared folder") from None
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise PermissionDenied(f"{name!r} is a symbolic link; only regular files are shared") from None
                raise storage_error(err, name) from None
        try:
            st = os.fstat(fd)
            refusal = self.refusal(name, st)
            if refusal is not None:
                raise refusal
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb", buffering=0), st, name

    def stat(self, name: str) -> os.stat_result | None:
        """The status of a shared file (never following a link), or None when name is not shared."""
        if not is_plain_name(name):
            return None
        with self.descriptor() as dir_fd:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
        return st if self.refusal(name, st) is None else None

    def entries(self) -> list[tuple[str, os.stat_result]]:
        """Every shared file directly in the folder, by name (plain NFC names; what refusal lets through)."""
        found = []
        with self.descriptor() as dir_fd, os.scandir(dir_fd) as it:
            for entry in it:
                if not is_plain_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed while we looked
                    continue
                if self.refusal(entry.name, st) is None:
                    found.append((entry.name, st))
        return found

    def remove_stale_temporaries(self) -> int:
        """Delete upload temporaries left by a killed process; return how many."""
        removed = 0
        with self.descriptor() as dir_fd, os.scandir(dir_fd) as it:
            for entry in it:
                if entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=dir_fd)
                        removed += 1
        return removed


def temporary_name(name: str) -> str:
    """A fresh hidden name for an upload of name, at most 255 bytes (the name cut by bytes, not characters)."""
    return fit_name(f"{TMP_PREFIX}{secrets.token_hex(6)}-", name)


class AtomicFile:
    """A file written under a hidden temporary name in the shared folder, then renamed into place.

    Nothing is visible under the final name until commit() checked the size and the sha256;
    abort() (or leaving the `with` block on an error) removes the temporary file. Every step
    is relative to one descriptor of the folder held for the upload's life: the bytes land in
    that folder whatever happens to its path meanwhile, and no link is followed.

    With a declared size, the disk's blocks are claimed at once (posix_fallocate), and only if
    the disk keeps `reserve` bytes free after them: an upload never starts that would fill the
    disk, and two that start together cannot both count on the same free space.
    """

    def __init__(
        self,
        folder: str | os.PathLike | SharedFolder,
        name: str,
        *,
        overwrite: bool = False,
        max_bytes: int | None = None,
        size: int = 0,
        reserve: int = 0,
    ) -> None:
        self.folder = folder if isinstance(folder, SharedFolder) else SharedFolder(folder)
        self.name = check_name(name)
        self.overwrite = overwrite
        self.max_bytes = max_bytes
        self.tmp = temporary_name(self.name)
        self.size = 0
        self.stat: os.stat_result | None = None
        self._digest = hashlib.sha256()
        self._blake3 = new_digest("blake3")  # recorded in the index beside the sha256 (the lane verifies it)
        self._fd = -1
        self._dir = -1
        self._done = False
        try:
            self._dir = os.open(self.folder.path, _OPEN_DIR)
            self._check_free()
            self._check_space(size, reserve)
            self._fd = os.open(self.tmp, _OPEN_NEW, 0o644, dir_fd=self._dir)
            if size > 0:
                self._claim(size)
                self._check_space(0, reserve)
        except OSError as err:
            self._close()
            raise storage_error(err, self.name) from None
        except BaseException:
            self._close()
            raise

    def _claim(self, size: int) -> None:
        """Allocate the temporary file's blocks for size bytes now (where the file system can)."""
        try:
            os.posix_fallocate(self._fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise

    def _check_space(self, size: int, reserve: int) -> None:
        """InsufficientStorage unless the disk keeps reserve bytes free after size more (a reserve of 0: no check)."""
        if reserve <= 0:
            return
        free = free_bytes(self.folder.path)
        if free - size < reserve:
            raise InsufficientStorage(
                f"this peer keeps {reserve} bytes of its disk free (settings.disk_reserve_bytes) and has {free} free: "
                f"{self.name!r} ({size} bytes) was not stored"
            )

    def _check_free(self) -> None:
        """AlreadyExists if the name is taken (without overwrite) or taken by another Unicode spelling."""
        for other in os.listdir(self._dir):
            if other != self.name and unicodedata.normalize("NFC", other) == self.name:
                raise AlreadyExists(f"{self.name!r} already exists on this peer under another Unicode spelling")
        try:
            st = os.stat(self.name, dir_fd=self._dir, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise PermissionDenied(f"{self.name!r} is a symbolic link in this peer's folder; it is not replaced")
        if not stat.S_ISREG(st.st_mode):
            raise PermissionDenied(f"{self.name!r} is not a regular file in this peer's folder; it is not replaced")
        if not self.overwrite:
            raise AlreadyExists(f"{self.name!r} already exists on this peer")

    def write(self, data: bytes) -> None:
        """Append data, refusing to grow beyond max_bytes."""
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise TooLarge(f"upload exceeds this peer's limit of {self.max_bytes} bytes")
        self._digest.update(data)
        self._blake3.update(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as err:
            raise storage_error(err, self.name) from None

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def blake3(self) -> str:
        return self._blake3.hexdigest()

    def commit(
        self,
        expected_sha256: str,
        expected_size: int,
        before_place: Callable[[os.stat_result], None] | None = None,
    ) -> os.stat_result:
        """Verify size and sha256, then rename into place; DataLoss (and nothing kept) on a mismatch.

        before_place(status) runs once the bytes are verified and on disk, before the rename (an
        error there keeps nothing). Returns the stored file's status (for the index's cache).
        """
        if expected_size != self.size:
            raise DataLoss(f"received {self.size} bytes, expected {expected_size}")
        if expected_sha256 != self.sha256:
            raise DataLoss(f"sha256 mismatch: got {self.sha256}, expected {expected_sha256}")
        try:
            os.fsync(self._fd)
            if before_place is not None:
                before_place(os.fstat(self._fd))
            move_into_place(self.tmp, self.name, self.overwrite, dir_fd=self._dir)
            self._done = True
            self.stat = os.fstat(self._fd)  # after the rename, which changes the ctime the index keys on
        except OSError as err:
            raise storage_error(err, self.name) from None
        finally:
            if self._done:
                os.close(self._fd)
                self._fd = -1
        return self.stat

    def abort(self) -> None:
        """Drop the temporary file; safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dir >= 0 and not self._done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp, dir_fd=self._dir)
        self._done = True

    def _close(self) -> None:
        self.abort()
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close()


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
