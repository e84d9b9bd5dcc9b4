"""Downloads that are verified, resumable and fetched from several holders at once.

A file is split into pieces. Worker threads, a few per source (one gRPC channel
per source), take the lowest missing pieces and pwrite them in place into a
preallocated partial file beside the target, over one of two paths:

- the fast lane (client/lane.py): an OpenLane call gets a one-time ticket for a
  run of consecutive pieces, and the holder sends the raw bytes with sendfile on
  a plain TCP connection; used when the holders' BLAKE3 digest is known and agreed;
- the gRPC Download stream, one ranged call per piece: the seed's path, used for
  holders without a lane, when a lane cannot connect (a firewall) or was cut, and
  for everything with lanes=False.

Both paths mark each piece done in the same journal, so resume, failover and
several sources work across them. A source that fails, stalls or turns out to hold
other content is dropped and its pieces go back to the pool for the remaining
sources. A busy source (at its transfer limit) is tried again after a growing
pause (client/retry.py), and so is an unreachable one when no other source is
left; the download ends as soon as every piece is in, whatever a slow or dead
holder is still doing. A thread hashes the finished prefix while the rest arrives
(BLAKE3 when known, else sha256); the file is renamed into place only when the
whole digest matches. Anything cut keeps its finished pieces for the next run
(see PartialFile).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from client import lane
from client.partial import InOrderHasher, PartialFile
from client.retry import RETRY_FOR, Backoff
from common.config import host_of
from common.credentials import NONE, Credentials
from common.errors import (
    AlreadyExists,
    BadRequest,
    Busy,
    DataLoss,
    Interrupted,
    NoLane,
    NotFound,
    P2PError,
    PermissionDenied,
    Unauthorized,
    Unavailable,
    from_rpc_error,
)
from common.names import check_name
from common.units import format_size

if TYPE_CHECKING:  # imported for real only when a gRPC client is made (the CLI's locate needs no grpc)
    import grpc

    from client.transfer import Content, TransferClient

PIECE_SIZE = 8 * 1024 * 1024  # unit of resume and of failover between sources
STREAMS_PER_SOURCE = 2  # parallel ranged calls per holder (hides per-call latency)
MAX_STREAMS = 8  # in all, whatever the number of holders
# Without lanes every byte crosses gRPC in Python (CPU-bound near 300 MB/s on 2 cores, whatever the
# number of streams), and each stream holds ~10 MiB of buffers: 2 streams for one holder, one per
# holder for several, keeps the client under 100 MiB (bench.transfer, `--no-lane` with 2 holders).
MAX_STREAMS_WITHOUT_LANES = 2
MAX_SOURCES = 4
STALL_TIMEOUT = 10.0  # seconds without a byte before a source counts as dead
CONNECT_TIMEOUT = 5.0
WATCH_INTERVAL = 0.1
LANE_RUN_PIECES = 16  # at most this many consecutive pieces per lane ticket (fewer round trips, bounded rework)
LANE_CONNECT_TIMEOUT = 2.0  # a lane not connected by then (a firewall dropping it) falls back to the stream


@dataclass(frozen=True)
class Result:
    path: Path
    size: int
    sha256: str
    resumed: int  # bytes kept from an earlier, cut run
    sources: dict[str, int]  # holder name -> bytes it sent in this run
    seconds: float
    verified: str = "sha256"  # the digest checked: "blake3" (lane downloads) or "sha256"
    lane_bytes: dict[str, int] = field(default_factory=dict)  # holder name -> bytes it sent over its lane
    lane_off: dict[str, str] = field(default_factory=dict)  # holder name -> why its lane was not (or no longer) used


class _LaneDown(Exception):
    """This holder's lane cannot serve (now); its gRPC stream may."""


class _Aborted(Exception):
    """The download is being stopped; leave the lane at once."""


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
    lane_sent: int = 0
    lane_off: str = ""  # why this holder's lane is not used ("" while it is worth trying)
    vouched: bool = False  # the holder proved itself (holder_check), or there is no check
    vouching: threading.Lock = field(default_factory=threading.Lock)

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
    buffer: bytearray | None = None  # this worker's lane receive buffer, reused run after run


class Download:
    """One download of `name` into the local path `out` from any of `holders`.

    holders are dicts with at least "name" and "grpc_address" (as /locate gives
    them, with "blake3" when the holder advertises it). With no expected sha256
    and size, the first holder that answers tells them (and its BLAKE3).

    The BLAKE3 a lane download verifies comes from the same place as the sha256:
    expected_blake3, else the holders' entries when they all agree, else the
    holder asked for the content. Holders that disagree on it refuse the lane:
    the download then goes over gRPC streams and verifies sha256.
    """

    def __init__(
        self,
        name: str,
        out: str | os.PathLike,
        holders: list[dict],
        *,
        expected_sha256: str = "",
        expected_blake3: str = "",
        size: int | None = None,
        lanes: bool = True,
        lane_connect_timeout: float = LANE_CONNECT_TIMEOUT,
        overwrite: bool = False,
        piece_size: int = PIECE_SIZE,
        streams_per_source: int = STREAMS_PER_SOURCE,
        max_sources: int = MAX_SOURCES,
        chunk_size: int = 1024 * 1024,
        stall_timeout: float = STALL_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        progress: Callable[[int], None] | None = None,
        on_start: Callable[[int, int], None] | None = None,
        transfer_factory: Callable[..., TransferClient] | None = None,
        retry_for: float = RETRY_FOR,
        credentials: Credentials | Callable[[str], Credentials] = NONE,
        holder_check: Callable[[TransferClient, str, str], Content] | None = None,
        clock=time.monotonic,
    ) -> None:
        self.name = check_name(name)
        self.out = Path(os.path.abspath(out))
        self.holders = holders
        self.sha256 = expected_sha256
        self.blake3 = expected_blake3
        self.size = size
        self.lanes = lanes
        self.lane_connect_timeout = lane_connect_timeout
        self.lanes_refused = ""  # why no lane is used at all
        self.overwrite = overwrite
        self.piece_size = max(64 * 1024, piece_size)
        self.streams_per_source = max(1, streams_per_source)
        self.max_sources = max(1, max_sources)
        self.chunk_size = chunk_size
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.progress = progress
        self.retry_for = retry_for
        self.on_start = on_start  # (size, bytes kept from an earlier run), once both are known
        self.clock = clock
        self._retry_deadline = 0.0
        # what each holder is shown, decided in one place: a holder's address -> its credentials (client/keys.py)
        self.credentials_for = credentials if callable(credentials) else (lambda address: credentials)
        self.transfer_factory = transfer_factory or self._transfer_client
        self.holder_check = holder_check  # a holder proves itself before it is used (client/keys.py)
        self._cond = threading.Condition()
        self._pending: list[int] = []
        self._in_flight = 0
        self._abort = threading.Event()
        self._slots: list[_Slot] = []
        self._sources: list[_Source] = []

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> Result:
        """Fetch, verify, rename into place; a P2PError (partial kept when useful) otherwise."""
        started = self.clock()
        self._retry_deadline = started + self.retry_for
        if self.out.exists() and not self.overwrite:
            raise AlreadyExists(f"{self.out} already exists")
        sources = [_Source(h.get("name") or h["grpc_address"], h["grpc_address"]) for h in self.holders]
        self._sources = sources
        if not sources:
            raise NotFound(f"no peer holds {self.name!r}")
        try:
            size = self.size if self.sha256 and self.size is not None else self._learn_content(sources)
            if self.sha256 and self.size is not None and not self.blake3:
                self._agree_on_blake3(sources)
            if not self.lanes:
                self.lanes_refused = "lanes turned off"
            elif not self.blake3 and not self.lanes_refused:
                self.lanes_refused = "no BLAKE3 digest advertised for this content"
            if self.lanes_refused:
                for source in sources:
                    source.lane_off = self.lanes_refused
            part = PartialFile(self.out, size, self.sha256, self.piece_size)
            try:
                return self._fetch(part, sources, started)
            finally:
                part.close()
        finally:
            for source in sources:
                if source.transfer is not None:
                    source.transfer.close()

    def _transfer_client(self, address: str, **options) -> TransferClient:
        return _transfer_client(address, credentials=self.credentials_for(address), **options)

    def _stat(self, source: _Source) -> Content:
        """What source says the file is; with a holder check, once the holder proved itself."""
        transfer = self._connect(source)
        if self.holder_check is None:
            return transfer.stat(self.name)
        content = self.holder_check(transfer, source.name, self.name)
        source.vouched = True
        return content

    def _vouch(self, source: _Source) -> None:
        """With a holder check: source proves itself, holding the expected content, before it serves a byte."""
        if self.holder_check is None or source.vouched:
            return
        with source.vouching:
            if source.vouched:
                return
            content = self._stat(source)
            if (content.size, content.sha256) != (self.size, self.sha256):
                raise DataLoss(f"{source.name} holds other content (sha256 {content.sha256[:12]})")

    def _connect(self, source: _Source) -> TransferClient:
        if source.transfer is None:
            source.transfer = self.transfer_factory(
                source.address, chunk_size=self.chunk_size, connect_timeout=self.connect_timeout, retry_for=0
            )
        return source.transfer

    def _agree_on_blake3(self, sources: list[_Source]) -> None:
        """The BLAKE3 the holders advertise beside the expected sha256, if they all say the same."""
        advertised = {h["blake3"] for h in self.holders if h.get("blake3")}
        if len(advertised) == 1:
            self.blake3 = advertised.pop()
        elif len(advertised) > 1:
            self.lanes_refused = "the holders disagree on the BLAKE3 digest of this content; verifying sha256"

    def _backoff(self) -> Backoff:
        """Pauses between tries of a busy or unreachable source, until the download's retry deadline."""
        return Backoff(max(0.0, self._retry_deadline - self.clock()), clock=self.clock)

    def _learn_content(self, sources: list[_Source]) -> int:
        """Ask holders in turn for the size and digests (return the size); all busy or unreachable: pause, retry."""
        backoff = self._backoff()
        while True:
            for source in sources:
                if source.error is not None and not isinstance(source.error, (Busy, Unavailable)):
                    continue
                try:
                    size, sha, b3 = self._stat(source)[:3]
                except (Unavailable, Busy, DataLoss) as err:  # DataLoss: it could not prove itself
                    source.error = err
                    continue
                if self.sha256 and sha != self.sha256:
                    source.error = DataLoss(f"{source.name} holds other content (sha256 {sha[:12]})")
                    continue
                if self.sha256:  # the sha256 came from elsewhere: a BLAKE3 must come from there too
                    self._agree_on_blake3(sources)
                else:
                    self.blake3 = self.blake3 or b3
                self.sha256, self.size = sha, size
                for other in sources:  # busy is no reason to leave a holder out of the download
                    if isinstance(other.error, Busy):
                        other.error = None
                source.error = None
                return size
            retryable = [s.error for s in sources if isinstance(s.error, (Busy, Unavailable))]
            if not retryable or not backoff.pause():
                for source in sources:
                    if isinstance(source.error, (Busy, Unavailable)):
                        source.error = backoff.exhausted(source.error)
                raise self._failure(sources, 0, None)

    def _fetch(self, part: PartialFile, sources: list[_Source], started: float) -> Result:
        resumed = part.done_bytes
        if self.on_start:
            self.on_start(part.size, resumed)
        self._pending = part.missing()
        verify = "blake3" if self.blake3 and not self.lanes_refused else "sha256"
        hasher = InOrderHasher(part, kind=verify)
        hasher.start()
        live = [s for s in sources if s.alive][: self.max_sources]
        limit = MAX_STREAMS if self.lanes else MAX_STREAMS_WITHOUT_LANES
        per_source = max(1, min(self.streams_per_source, limit // max(1, len(live))))
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
            self._watch(workers, sources, finished=lambda: len(part.done) == part.pieces)
        except BaseException as err:
            self._stop_all()
            hasher.stop()
            if isinstance(err, KeyboardInterrupt):
                raise self._interrupted(part) from None
            raise
        self._stop_all()  # whatever still waits on a slow or dead holder: nothing is left to fetch
        if self._pending or len(part.done) < part.pieces:
            hasher.stop()
            error = self._failure(sources, part.done_bytes, part)
            if not part.done:
                part.discard()
            raise error
        hasher.join()
        digest = hasher.hexdigest()
        expected = self.blake3 if verify == "blake3" else part.sha256
        if digest != expected:
            part.discard()
            raise DataLoss(
                f"{verify} mismatch for {self.name}: got {digest[:16]}…, expected "
                f"{expected[:16]}…; the partial download was deleted"
            )
        path = part.commit(self.overwrite)
        return Result(
            path,
            part.size,
            part.sha256,
            resumed,
            {s.name: s.sent for s in sources if s.sent},
            self.clock() - started,
            verified=verify,
            lane_bytes={s.name: s.lane_sent for s in sources if s.lane_sent},
            lane_off={s.name: s.lane_off for s in sources if s.lane_off},
        )

    def _watch(self, workers: list[threading.Thread], sources: list[_Source], finished: Callable[[], bool]) -> None:
        """Wait for the workers (or every piece), report progress; cancel calls stalled for stall_timeout."""
        reported = 0
        while True:
            alive = [w for w in workers if w.is_alive()]
            if alive:
                alive[0].join(WATCH_INTERVAL)
            received = sum(s.sent for s in sources)
            if self.progress and received > reported:
                self.progress(received - reported)
                reported = received
            if not alive or finished():
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

    def _interrupted(self, part: PartialFile) -> Interrupted:
        """Ctrl-C: keep the finished pieces for the next run and say where they are."""
        if not part.done:
            part.discard()
            return Interrupted(f"interrupted before a piece of {self.name} was complete; nothing was kept")
        return Interrupted(
            f"interrupted: {format_size(part.done_bytes)} of {format_size(part.size)} kept in {part.path}; "
            "run the same download again to resume"
        )

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
            and isinstance(errors[0], (DataLoss, NotFound, BadRequest, Unauthorized))
        ):
            kind = type(errors[0])
        if part is not None and part.done:
            kept = f"; {done} of {part.size} bytes kept, run the same download again to resume"
        else:
            kept = ""
        return kind(f"cannot fetch {self.name}: {reasons or 'no holder answered'}{kept}")

    # -- one worker ------------------------------------------------------------------------------
    def _take(self, most: int = 1) -> list[int]:
        """The lowest missing piece and up to most-1 consecutive ones after it; [] when nothing is left."""
        with self._cond:
            while not self._pending and self._in_flight and not self._abort.is_set():
                self._cond.wait(0.5)
            if not self._pending or self._abort.is_set():
                return []
            run = [self._pending.pop(0)]
            while len(run) < most and self._pending and self._pending[0] == run[-1] + 1:
                run.append(self._pending.pop(0))
            self._in_flight += len(run)
            return run

    def _give_back(self, pieces: list[int], done: set[int]) -> None:
        """Pieces taken by a worker come back: those not done return to the pool."""
        with self._cond:
            self._in_flight -= len(pieces)
            back = [p for p in pieces if p not in done]
            if back:
                self._pending.extend(back)
                self._pending.sort()
            self._cond.notify_all()

    def _lane_run(self) -> int:
        """Pieces per lane ticket: long runs, but short enough that every worker gets a share."""
        with self._cond:
            workers = sum(1 for slot in self._slots if slot.source.alive) or 1
            return max(1, min(LANE_RUN_PIECES, len(self._pending) // (2 * workers)))

    def _others_alive(self, source: _Source) -> bool:
        return any(s.alive and s is not source and s.workers for s in self._sources)

    def _ready(self, source: _Source, backoff: Backoff) -> TransferClient | None:
        """The source's client once it answers; None when it is given up (others can do the work, or time is up)."""
        while True:
            try:
                transfer = self._connect(source)
                transfer.wait_ready()
                self._vouch(source)
                return transfer
            except (Unavailable, Busy) as err:
                if not source.alive or self._others_alive(source) or not backoff.pause(self._abort):
                    source.error = source.error or backoff.exhausted(err)
                    return None
            except P2PError as err:
                source.error = source.error or err
                return None

    def _retire(self, source: _Source, error: P2PError | None) -> None:
        """This worker stops; the source is given up with error when it was its last worker."""
        with self._cond:
            source.workers -= 1
            if source.workers == 0 and error is not None:
                source.error = source.error or error
            self._cond.notify_all()

    def _work(self, part: PartialFile, slot: _Slot, hasher: InOrderHasher) -> None:
        source = slot.source
        backoff = self._backoff()
        transfer = self._ready(source, backoff)
        if transfer is None:
            self._retire(source, None)
            return
        while source.alive and not self._abort.is_set():
            by_lane = not source.lane_off
            pieces = self._take(self._lane_run() if by_lane else 1)
            if not pieces:
                break
            done: set[int] = set()
            failed: P2PError | None = None
            try:
                if by_lane:
                    self._fetch_lane(part, pieces, slot, transfer, hasher, done)
                else:
                    self._fetch_piece(part, pieces[0], slot, transfer)
                    part.mark_done(pieces[0])
                    done.add(pieces[0])
                    hasher.piece_done()
            except _LaneDown as down:
                source.lane_off = source.lane_off or str(down)
            except _Aborted:
                pass
            except Busy as err:
                failed = err
            except _SourceGone as gone:
                if isinstance(gone.error, Unavailable) and source.alive and not self._others_alive(source):
                    failed = gone.error  # the only holder left, and not a stall: it may be back in a moment
                else:
                    source.error = source.error or gone.error
            finally:
                slot.call = None
                self._give_back(pieces, done)
            if done:
                backoff = self._backoff()  # the next refusal starts with a short pause again
            if failed is not None and not backoff.pause(self._abort):
                self._retire(source, None if self._abort.is_set() else backoff.exhausted(failed))
                return
        self._retire(source, None)

    def _fetch_lane(
        self, part: PartialFile, pieces: list[int], slot: _Slot, transfer, hasher: InOrderHasher, done: set[int]
    ) -> None:
        """Fetch a run of consecutive pieces over the holder's lane, marking each done as its last byte lands."""
        source = slot.source
        offset = part.piece_range(pieces[0])[0]
        last_offset, last_length = part.piece_range(pieces[-1])
        length = last_offset + last_length - offset
        try:
            ticket = transfer.open_lane(self.name, offset, length, timeout=self.connect_timeout + 5.0)
        except (NoLane, Unauthorized, PermissionDenied) as err:
            # no lane, or one this caller may not use (a peer whose policy predates OpenLane): the
            # holder's stream serves the range, or gives the real answer
            raise _LaneDown(err.detail) from None
        except Busy:
            raise
        except P2PError as err:
            raise _SourceGone(err) from None
        if ticket.size != part.size or ticket.sha256 != part.sha256 or ticket.blake3 != self.blake3:
            raise _SourceGone(
                DataLoss(f"{source.name} now holds other content ({ticket.size} bytes, sha256 {ticket.sha256[:12]})")
            )
        if (ticket.offset, ticket.length) != (offset, length):
            raise _SourceGone(DataLoss(f"{source.name} granted another range than the one asked for"))
        queue = list(pieces)
        boundary = part.piece_range(queue[0])[0] + part.piece_range(queue[0])[1]

        def write(position: int, block: memoryview) -> None:
            nonlocal boundary
            part.write(position, block)
            n = len(block)
            source.sent += n
            source.lane_sent += n
            slot.last_progress = self.clock()
            end = position + n
            while queue and end >= boundary:
                piece = queue.pop(0)
                part.mark_done(piece)
                done.add(piece)
                hasher.piece_done()
                if queue:
                    boundary += part.piece_range(queue[0])[1]
            if self._abort.is_set():
                raise _Aborted

        if slot.buffer is None:
            slot.buffer = bytearray(lane.BUFFER_SIZE)
        try:
            lane.fetch(
                host_of(source.address),
                ticket.port,
                ticket.ticket,
                self.name,
                offset,
                length,
                write,
                connect_timeout=self.lane_connect_timeout,
                stall_timeout=self.stall_timeout,
                buffer=slot.buffer,
            )
        except lane.LaneError as err:
            if err.kind == "busy":
                raise Busy(f"{source.name}: {err.detail}") from None
            if err.kind == "gone":
                raise _SourceGone(DataLoss(f"{source.name}: {err.detail}")) from None
            if err.kind == "stalled":  # given up at once, as a stalled stream is (stall_timeout is the user's limit)
                source.error = source.error or Unavailable(f"{source.name} sent nothing for {self.stall_timeout:g}s")
                raise _SourceGone(source.error) from None
            raise _LaneDown(f"lane {err.kind}: {err.detail}") from None

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
        except _rpc_error() as err:
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


def _transfer_client(*args, **kwargs) -> TransferClient:
    """A TransferClient; grpc is imported with it, not with this module (the CLI's locate needs neither)."""
    from client.transfer import TransferClient

    return TransferClient(*args, **kwargs)


def _rpc_error() -> type[Exception]:
    import grpc

    return grpc.RpcError


def download(name: str, out: str | os.PathLike, holders: list[dict], **options) -> Result:
    """Fetch name from holders into out, verified; see Download for the options."""
    return Download(name, out, holders, **options).run()
