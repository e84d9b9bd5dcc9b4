"""The client's download in progress: a preallocated partial file, its journal of pieces, the hasher.

A file is fetched as pieces (see client/scheduler.py); each piece lands in place in the
partial file beside the target, and the journal lists finished pieces so a cut download
continues where it stopped. The whole file is renamed into place only when its sha256 matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

from common.errors import P2PError
from common.files import HASH_BLOCK, move_into_place, new_digest
from common.names import MAX_NAME_BYTES, fit_name

PART_MARK = ".p2p-part-"
JOURNAL_SUFFIX = ".journal"


class WriteFailed(P2PError):
    """This machine could not write the download (a full disk, a quota): free space or pick another --out."""

    name = "write_failed"
    exit_code = 1

    @classmethod
    def of(cls, err: OSError, path: Path) -> WriteFailed:
        return cls(f"{(err.strerror or str(err)).lower()} writing {path}")


def partial_name(target_name: str, sha256: str) -> str:
    """Hidden name of a download in progress, beside its target, keyed by the content hash.

    The target's name is cut by bytes, so the name and its journal (JOURNAL_SUFFIX) fit 255 bytes.
    """
    return fit_name(".", target_name, f"{PART_MARK}{sha256[:16]}", limit=MAX_NAME_BYTES - len(JOURNAL_SUFFIX))


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
        self.journal_path = base.with_name(base.name + JOURNAL_SUFFIX)
        header = {"size": size, "sha256": sha256, "piece_size": piece_size}
        self.piece_size, self.done = self._load(header)
        self._header = {**header, "piece_size": self.piece_size}
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
        """Write data at offset (thread-safe: pwrite needs no shared position); WriteFailed names a full disk.

        data is a buffer, or a block that puts itself into the file (write_into(fd, offset), as a
        lane's PipedBlock splices its bytes in).
        """
        try:
            put = getattr(data, "write_into", None)
            if put is not None:
                put(self._fd, offset)
                return
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as err:
            raise WriteFailed.of(err, self.path) from None

    def mark_done(self, index: int) -> None:
        """Record that piece index is fully written."""
        with self._lock:
            self.done.add(index)
            try:
                self._journal.write(f"{index}\n")
                self._journal.flush()
            except OSError as err:
                raise WriteFailed.of(err, self.journal_path) from None

    def redo(self, pieces: list[int]) -> None:
        """Forget that pieces are done (their bytes are to be fetched again): the journal is rewritten without them."""
        with self._lock:
            self.done -= set(pieces)
            tmp = self.journal_path.with_name(self.journal_path.name + ".tmp")
            lines = [json.dumps(self._header)] + [str(i) for i in sorted(self.done)]
            try:
                tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
                os.replace(tmp, self.journal_path)
            except OSError as err:
                raise WriteFailed.of(err, self.journal_path) from None
            self._journal.close()
            self._journal = open(self.journal_path, "a", encoding="utf-8")

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


class Hasher(Protocol):
    """What a download asks of its digest: told when pieces finish, asked for the hex digest at the end.

    InOrderHasher reads finished pieces back from the page cache; another implementation may
    hash blocks as they arrive instead, without the scheduler noticing.
    """

    def start(self) -> None: ...

    def piece_done(self) -> None: ...

    def stop(self) -> None: ...

    def hexdigest(self) -> str: ...


class InOrderHasher(threading.Thread):
    """Hashes a PartialFile piece by piece as the finished prefix grows, overlapping the network.

    Pieces may finish in any order; this thread reads back (from the page cache)
    each piece once every piece before it is done, so the digest is ready a
    moment after the last byte lands.
    """

    def __init__(self, part: PartialFile, block: int = HASH_BLOCK, kind: str = "sha256") -> None:
        super().__init__(name="p2p-hasher", daemon=True)
        self.part = part
        self.block = block
        self.kind = kind  # "sha256", or "blake3" for a download over the fast lane
        self.digest = new_digest(kind)
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
        """The digest once every piece is hashed (waits for it)."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()
