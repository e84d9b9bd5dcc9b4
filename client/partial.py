"""The client's download in progress: a preallocated partial file, its journal of pieces, the hasher.

A file is fetched as pieces (see client/scheduler.py); each piece lands in place in the
partial file beside the target, and the journal lists finished pieces so a cut download
continues where it stopped. The whole file is renamed into place only when its sha256 matches.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from common.errors import P2PError
from common.files import HASH_BLOCK, move_into_place, new_digest
from common.names import MAX_NAME_BYTES, fit_name

if TYPE_CHECKING:
    from client.lane import PipedBlock

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
    """What a download asks of its digest: told where bytes landed, asked for the hex digest at the end.

    The scheduler calls landed(position, data) after data was written into the file at position
    (each byte of a run is written once); InOrderHasher hashes them from that buffer when they
    are next in order, and reads back the rest.
    """

    def start(self) -> None: ...

    def landed(self, position: int, data: memoryview | PipedBlock) -> None: ...

    def stop(self) -> None: ...

    def hexdigest(self) -> str: ...


class InOrderHasher:
    """Hashes a PartialFile in order while its bytes land, mostly straight from the receive buffer.

    The digest needs the file's bytes in order; they land in any order (several requests,
    several holders). The bytes hashed so far end at the *frontier*. A block written exactly
    at the frontier is hashed at once, on the thread that wrote it, from the buffer it was
    written from (still in the CPU's caches): no second pass over the file. A block that lands
    ahead of the frontier is only noted; a helper thread reads it back from the page cache and
    hashes it once the frontier reaches it (one thread feeds the digest at a time: a block
    landing at the frontier while the helper reads is noted too). Pieces kept from an earlier
    run are read back the same way. With one holder (one request in flight) every byte lands at
    the frontier; with several, the helper catches up with each request and then it hashes its
    own bytes again.

    The digest always covers the bytes the file holds: a byte written again after it was
    hashed (never in one run of the scheduler, whose requests write each byte once) makes
    hexdigest() hash the whole file afresh instead.
    """

    def __init__(self, part: PartialFile, block: int = HASH_BLOCK, kind: str = "sha256") -> None:
        self.part = part
        self.block = block
        self.kind = kind  # "sha256", or "blake3" for a download over the fast lane
        self.digest = new_digest(kind)
        self.hashed = 0  # the frontier: bytes [0, hashed) are in the digest
        self.inline = 0  # of which hashed by the writing thread as they landed (the rest: by the helper)
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._busy = False  # a thread is feeding the digest: no other may
        self._halt = False
        self._again = False  # a hashed byte was written again: the digest comes from the whole file
        self._ahead: list[list[int]] = []  # [start, end) landed ahead of the frontier: sorted, disjoint
        for index in sorted(part.done):  # pieces kept from an earlier run
            offset, length = part.piece_range(index)
            self._note(offset, offset + length)
        self._landed = memoryview(bytearray(min(block, 1 << 20)))  # for reading back what the writing thread hashes
        self._thread = threading.Thread(target=self._run, name="p2p-hasher", daemon=True)

    # -- the Hasher protocol ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def landed(self, position: int, data: memoryview | PipedBlock) -> None:
        """data was just written into the file at position: hash it now if it is next, else note it.

        data is the buffer it was written from, or a block that went into the file by itself (a
        lane's PipedBlock: its bytes are read back at once, still in the CPU's caches).
        """
        n = len(data)
        with self._cond:
            if n == 0 or self._halt or self._again:
                return
            if position < self.hashed or self._overlaps(position, position + n):
                self._again = True  # written twice: only the whole file can say what it holds now
                self._cond.notify_all()
                return
            if position != self.hashed or self._busy:
                self._note(position, position + n)
                self._cond.notify_all()
                return
            self._busy = True
        fed = 0
        try:
            if isinstance(data, memoryview):
                self.digest.update(data)
            else:
                self._read_back(position, position + n, self._landed)
            fed = n
        except BaseException as err:  # noqa: BLE001 - reported by hexdigest
            self._fail(err)
        finally:
            with self._cond:
                self.hashed += fed
                self.inline += fed
                self._busy = False
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify_all()

    def hexdigest(self) -> str:
        """The digest once every byte is hashed (waits for the helper)."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        if self._again:
            return self._digest_of_file()
        if self.hashed != self.part.size:
            raise OSError(f"only {self.hashed} of {self.part.size} bytes of {self.part.path} were hashed")
        return self.digest.hexdigest()

    # -- the helper thread: what landed ahead of the frontier ------------------------------------------
    def _run(self) -> None:
        size = self.part.size
        view = memoryview(bytearray(self.block))
        while True:
            with self._cond:
                while not (self._halt or self._again or self.hashed >= size or self._ready()):
                    self._cond.wait()
                if self._halt or self._again or self.hashed >= size:
                    return
                start = self.hashed
                end = min(self._ahead[0][1], start + self.block)
                self._busy = True
            fed = 0
            try:
                self._read_back(start, end, view)
                fed = end - start
            except BaseException as err:  # noqa: BLE001 - reported by hexdigest
                self._fail(err)
            finally:
                with self._cond:
                    self.hashed += fed
                    self._busy = False
                    self._cond.notify_all()

    def _read_back(self, start: int, end: int, view: memoryview) -> None:
        """Hash the file's bytes [start, end), read through view (only the thread feeding the digest)."""
        while start < end:
            n = self.part.read_into(view[: min(len(view), end - start)], start)
            if n <= 0:
                raise OSError(f"short read at {start} in {self.part.path}")
            self.digest.update(view[:n])
            start += n

    def _ready(self) -> bool:
        """Whether landed bytes wait at the frontier and nobody feeds the digest (holding the lock)."""
        ahead = self._ahead
        while ahead and ahead[0][1] <= self.hashed:
            ahead.pop(0)  # hashed since it was noted
        return not self._busy and bool(ahead) and ahead[0][0] <= self.hashed

    def _note(self, start: int, end: int) -> None:
        """[start, end) landed ahead of the frontier (holding the lock); touching ranges merge."""
        ahead = self._ahead
        i = bisect.bisect_left(ahead, [start, end])
        if i and ahead[i - 1][1] == start:
            i -= 1
            ahead[i][1] = end
        else:
            ahead.insert(i, [start, end])
        if i + 1 < len(ahead) and ahead[i + 1][0] == ahead[i][1]:
            ahead[i][1] = ahead.pop(i + 1)[1]

    def _overlaps(self, start: int, end: int) -> bool:
        """Whether [start, end) meets bytes already noted (holding the lock)."""
        ahead = self._ahead
        i = bisect.bisect_right(ahead, [start, end])
        return (i > 0 and ahead[i - 1][1] > start) or (i < len(ahead) and ahead[i][0] < end)

    def _fail(self, err: BaseException) -> None:
        with self._cond:
            self.error = self.error or err
            self._halt = True
            self._cond.notify_all()

    def _digest_of_file(self) -> str:
        digest = new_digest(self.kind)
        view = memoryview(bytearray(self.block))
        offset = 0
        while offset < self.part.size:
            n = self.part.read_into(view, offset)
            if n <= 0:
                raise OSError(f"short read at {offset} in {self.part.path}")
            digest.update(view[:n])
            offset += n
        return digest.hexdigest()
