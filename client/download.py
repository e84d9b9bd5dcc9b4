"""Downloads that are verified, resumable and fetched from several holders at once.

A file is split into pieces. Worker threads, a few per source (one gRPC channel
per source), take the lowest missing piece, fetch it as one ranged Download call
and pwrite it in place into a preallocated partial file beside the target. A
source that fails, stalls or turns out to hold other content is dropped and its
piece goes back to the pool for the remaining sources. A thread hashes the
finished prefix while the rest arrives; the file is renamed into place only
when the whole sha256 matches. Anything cut keeps its finished pieces for the
next run (see PartialFile).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from client.partial import InOrderHasher, PartialFile
from client.transfer import TransferClient
from common.errors import (
    AlreadyExists,
    BadRequest,
    Busy,
    DataLoss,
    NotFound,
    P2PError,
    Unavailable,
    from_rpc_error,
)
from common.names import check_name

PIECE_SIZE = 8 * 1024 * 1024  # unit of resume and of failover between sources
STREAMS_PER_SOURCE = 2  # parallel ranged calls per holder (hides per-call latency)
MAX_STREAMS = 8  # in all, whatever the number of holders
MAX_SOURCES = 4
STALL_TIMEOUT = 10.0  # seconds without a byte before a source counts as dead
CONNECT_TIMEOUT = 5.0
WATCH_INTERVAL = 0.1


@dataclass(frozen=True)
class Result:
    path: Path
    size: int
    sha256: str
    resumed: int  # bytes kept from an earlier, cut run
    sources: dict[str, int]  # holder name -> bytes it sent in this run
    seconds: float


class _SourceGone(Exception):
    """This holder cannot serve the file (any more); the reason is a P2PError."""

    def __init__(self, error: P2PError) -> None:
        super().__init__(error.detail)
        self.error = error


@dataclass
class _Source:
    name: str
    address: str
    transfer: TransferClient | None = None
    error: P2PError | None = None
    sent: int = 0
    workers: int = 0

    @property
    def alive(self) -> bool:
        return self.error is None


@dataclass
class _Slot:
    """What one worker is doing now, for the stall watchdog."""

    source: _Source
    call: grpc.Call | None = None  # the ranged Download call in flight (cancel() on a stall)
    last_progress: float = field(default_factory=time.monotonic)
    stalled: bool = False


class Download:
    """One download of `name` into the local path `out` from any of `holders`.

    holders are dicts with at least "name" and "grpc_address" (as /locate gives
    them). With no expected sha256 and size, the first holder that answers
    tells them.
    """

    def __init__(
        self,
        name: str,
        out: str | os.PathLike,
        holders: list[dict],
        *,
        expected_sha256: str = "",
        size: int | None = None,
        overwrite: bool = False,
        piece_size: int = PIECE_SIZE,
        streams_per_source: int = STREAMS_PER_SOURCE,
        max_sources: int = MAX_SOURCES,
        chunk_size: int = 1024 * 1024,
        stall_timeout: float = STALL_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        progress: Callable[[int], None] | None = None,
        transfer_factory: Callable[..., TransferClient] | None = None,
        clock=time.monotonic,
    ) -> None:
        self.name = check_name(name)
        self.out = Path(os.path.abspath(out))
        self.holders = holders
        self.sha256 = expected_sha256
        self.size = size
        self.overwrite = overwrite
        self.piece_size = max(64 * 1024, piece_size)
        self.streams_per_source = max(1, streams_per_source)
        self.max_sources = max(1, max_sources)
        self.chunk_size = chunk_size
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.progress = progress
        self.clock = clock
        self.transfer_factory = transfer_factory or TransferClient
        self._cond = threading.Condition()
        self._pending: list[int] = []
        self._in_flight = 0
        self._abort = threading.Event()
        self._slots: list[_Slot] = []

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> Result:
        """Fetch, verify, rename into place; a P2PError (partial kept when useful) otherwise."""
        started = self.clock()
        if self.out.exists() and not self.overwrite:
            raise AlreadyExists(f"{self.out} already exists")
        sources = [_Source(h.get("name") or h["grpc_address"], h["grpc_address"]) for h in self.holders]
        if not sources:
            raise NotFound(f"no peer holds {self.name!r}")
        try:
            size = self.size if self.sha256 and self.size is not None else self._learn_content(sources)
            part = PartialFile(self.out, size, self.sha256, self.piece_size)
            try:
                return self._fetch(part, sources, started)
            finally:
                part.close()
        finally:
            for source in sources:
                if source.transfer is not None:
                    source.transfer.close()

    def _connect(self, source: _Source) -> TransferClient:
        if source.transfer is None:
            source.transfer = self.transfer_factory(
                source.address, chunk_size=self.chunk_size, connect_timeout=self.connect_timeout
            )
        return source.transfer

    def _learn_content(self, sources: list[_Source]) -> int:
        """Ask holders in turn for the file's size and sha256; return the size."""
        for source in sources:
            try:
                size, sha = self._connect(source).stat(self.name)
            except (Unavailable, Busy) as err:
                source.error = err
                continue
            if self.sha256 and sha != self.sha256:
                source.error = DataLoss(f"{source.name} holds other content (sha256 {sha[:12]})")
                continue
            self.sha256, self.size = sha, size
            return size
        raise self._failure(sources, 0, None)

    def _fetch(self, part: PartialFile, sources: list[_Source], started: float) -> Result:
        resumed = part.done_bytes
        self._pending = part.missing()
        hasher = InOrderHasher(part)
        hasher.start()
        live = [s for s in sources if s.alive][: self.max_sources]
        per_source = max(1, min(self.streams_per_source, MAX_STREAMS // max(1, len(live))))
        workers = []
        if self._pending:
            for source in live:
                for _ in range(per_source):
                    slot = _Slot(source)
                    self._slots.append(slot)
                    source.workers += 1
                    workers.append(
                        threading.Thread(
                            target=self._work, args=(part, slot, hasher), name=f"p2p-fetch-{source.name}", daemon=True
                        )
                    )
            for worker in workers:
                worker.start()
        try:
            self._watch(workers, sources)
        except BaseException:
            self._stop_all()
            hasher.stop()
            raise
        if self._pending or len(part.done) < part.pieces:
            hasher.stop()
            error = self._failure(sources, part.done_bytes, part)
            if not part.done:
                part.discard()
            raise error
        hasher.join()
        digest = hasher.hexdigest()
        if digest != part.sha256:
            part.discard()
            raise DataLoss(
                f"sha256 mismatch for {self.name}: got {digest[:16]}…, expected "
                f"{part.sha256[:16]}…; the partial download was deleted"
            )
        path = part.commit(self.overwrite)
        return Result(
            path, part.size, digest, resumed, {s.name: s.sent for s in sources if s.sent}, self.clock() - started
        )

    def _watch(self, workers: list[threading.Thread], sources: list[_Source]) -> None:
        """Wait for the workers, report progress; cancel any call that made no progress for stall_timeout."""
        reported = 0
        while True:
            alive = [w for w in workers if w.is_alive()]
            if alive:
                alive[0].join(WATCH_INTERVAL)
            received = sum(s.sent for s in sources)
            if self.progress and received > reported:
                self.progress(received - reported)
                reported = received
            if not alive:
                return
            now = self.clock()
            for slot in self._slots:
                call = slot.call
                if call is not None and now - slot.last_progress > self.stall_timeout:
                    slot.stalled = True
                    slot.source.error = slot.source.error or Unavailable(
                        f"{slot.source.name} sent nothing for {self.stall_timeout:g}s"
                    )
                    call.cancel()

    def _stop_all(self) -> None:
        self._abort.set()
        with self._cond:
            self._cond.notify_all()
        for slot in self._slots:
            if slot.call is not None:
                slot.call.cancel()

    def _failure(self, sources: list[_Source], done: int, part: PartialFile | None) -> P2PError:
        """The one error that explains why no (further) holder could help."""
        errors = [s.error for s in sources if s.error is not None]
        reasons = "; ".join(f"{s.name}: {s.error.detail}" for s in sources if s.error is not None)
        kind: type[P2PError] = Unavailable
        if errors and all(isinstance(e, Busy) for e in errors):
            kind = Busy
        elif (
            errors
            and all(isinstance(e, type(errors[0])) for e in errors)
            and isinstance(errors[0], (DataLoss, NotFound, BadRequest))
        ):
            kind = type(errors[0])
        if part is not None and part.done:
            kept = f"; {done} of {part.size} bytes kept, run the same download again to resume"
        else:
            kept = ""
        return kind(f"cannot fetch {self.name}: {reasons or 'no holder answered'}{kept}")

    # -- one worker ------------------------------------------------------------------------------
    def _take(self) -> int | None:
        """The lowest missing piece; None when nothing is left to do or to retry."""
        with self._cond:
            while not self._pending and self._in_flight and not self._abort.is_set():
                self._cond.wait(0.5)
            if not self._pending or self._abort.is_set():
                return None
            self._in_flight += 1
            return self._pending.pop(0)

    def _give_back(self, piece: int | None, done: bool) -> None:
        with self._cond:
            if piece is not None:
                self._in_flight -= 1
                if not done:
                    self._pending.append(piece)
                    self._pending.sort()
            self._cond.notify_all()

    def _work(self, part: PartialFile, slot: _Slot, hasher: InOrderHasher) -> None:
        source = slot.source
        try:
            transfer = self._connect(source)
            transfer.wait_ready()
        except P2PError as err:
            source.error = source.error or err
            self._give_back(None, False)
            return
        while source.alive and not self._abort.is_set():
            piece = self._take()
            if piece is None:
                break
            done = False
            try:
                self._fetch_piece(part, piece, slot, transfer)
                done = True
            except Busy as err:
                with self._cond:
                    source.workers -= 1
                    if source.workers == 0:
                        source.error = source.error or err
                break
            except _SourceGone as gone:
                source.error = source.error or gone.error
            finally:
                slot.call = None
                self._give_back(piece, done)
            if done:
                part.mark_done(piece)
                hasher.piece_done()

    def _fetch_piece(self, part: PartialFile, piece: int, slot: _Slot, transfer) -> None:
        offset, length = part.piece_range(piece)
        position, end = offset, offset + length
        slot.last_progress = self.clock()
        try:
            call = transfer.download_range(
                self.name, offset, length, chunk_size=self.chunk_size, timeout=30.0 + length / (256 * 1024)
            )
            slot.call = call
            for chunk in call:
                if chunk.filename and (chunk.size != part.size or (chunk.sha256 and chunk.sha256 != part.sha256)):
                    call.cancel()
                    raise _SourceGone(
                        DataLoss(
                            f"{slot.source.name} now holds other content "
                            f"({chunk.size} bytes, sha256 {chunk.sha256[:12]})"
                        )
                    )
                data = chunk.data
                if not data:
                    continue
                if position + len(data) > end:
                    call.cancel()
                    raise _SourceGone(DataLoss(f"{slot.source.name} sent bytes past the asked range"))
                part.write(position, data)
                position += len(data)
                slot.last_progress = self.clock()
                slot.source.sent += len(data)
                if self._abort.is_set():
                    call.cancel()
                    return
        except grpc.RpcError as err:
            if slot.stalled:
                raise _SourceGone(Unavailable(f"{slot.source.name} sent nothing for {self.stall_timeout:g}s")) from None
            error = from_rpc_error(err)
            if isinstance(error, Busy):
                raise error from None
            raise _SourceGone(error) from None
        if position != end:
            raise _SourceGone(
                Unavailable(f"{slot.source.name} ended piece {piece} after {position - offset} of {length} bytes")
            )


def download(name: str, out: str | os.PathLike, holders: list[dict], **options) -> Result:
    """Fetch name from holders into out, verified; see Download for the options."""
    return Download(name, out, holders, **options).run()
