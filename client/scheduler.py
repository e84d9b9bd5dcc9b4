"""The download's scheduler: which pieces to fetch from which holder, and what to do when one fails.

The scheduler owns the file's missing pieces, each holder's state and the worker threads
(a few per holder) that drive the transports (client/transports.py). A worker takes the
lowest missing pieces (a run of them for a lane ticket, one for a stream call), hands the
range to its holder's transport and settles the outcome: a lane that cannot serve makes
the holder use its stream; a busy holder, or an unreachable one when no other is left, is
tried again after a growing pause (client/retry.py); a holder that stalls or holds other
content is given up and its pieces go back to the pool for the others. A watchdog on the
calling thread reports progress and cancels requests that sent nothing for stall_timeout.

Every byte lands in place in the partial file (client/partial.py) through a sink that
journals each piece as its last byte is written. The run ends as soon as every piece is
in, whatever a slow or dead holder is still doing: every worker is stopped and joined
before the caller closes channels and the file. When pieces remain and no holder can
help, `failure()` gives the one error that says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client.cancel import Cancel
from client.credentials import Credentials
from client.options import LANE_RUN_PIECES, MAX_STREAMS, MAX_STREAMS_WITHOUT_LANES, DownloadOptions
from client.partial import Hasher, PartialFile
from client.retry import Backoff
from client.transports import Content, Job, LaneTransport, Outcome, StreamTransport, Verdict
from common.errors import BadRequest, Busy, DataLoss, NotFound, P2PError, Unauthorized, Unavailable

if TYPE_CHECKING:
    from client.transfer import TransferClient

WATCH_INTERVAL = 0.1


@dataclass
class Holder:
    """One holder of the content as this download sees it: how to reach it, how it is doing."""

    name: str
    address: str
    credentials: Credentials
    entry: dict = field(default_factory=dict)  # what /locate said about it
    transfer: TransferClient | None = None
    error: P2PError | None = None  # why it was given up (None while it may serve)
    sent: int = 0  # bytes it sent in this run
    lane_sent: int = 0  # of which over its lane
    lane_off: str = ""  # why its lane is not used ("" while it is worth trying)
    workers: int = 0

    @classmethod
    def of(cls, entry: dict, options: DownloadOptions) -> Holder:
        address = entry["grpc_address"]
        return cls(entry.get("name") or address, address, options.credentials_for(entry), entry)

    @property
    def alive(self) -> bool:
        return self.error is None

    def client(self, options: DownloadOptions) -> TransferClient:
        """Its gRPC client (one channel per holder), made on first use; grpc is imported only then."""
        if self.transfer is None:
            from client.transfer import TransferClient

            self.transfer = TransferClient(
                self.address,
                chunk_size=options.chunk_size,
                connect_timeout=options.connect_timeout,
                retry_for=0,
                credentials=self.credentials,
            )
        return self.transfer

    def close(self) -> None:
        if self.transfer is not None:
            self.transfer.close()


def failure(name: str, holders: list[Holder], part: PartialFile | None = None) -> P2PError:
    """The one error that explains why no (further) holder could help."""
    errors = [h.error for h in holders if h.error is not None]
    reasons = "; ".join(f"{h.name}: {h.error.detail}" for h in holders if h.error is not None)
    kind: type[P2PError] = Unavailable
    if errors and all(isinstance(e, Busy) for e in errors):
        kind = Busy
    elif (
        errors
        and all(isinstance(e, type(errors[0])) for e in errors)
        and isinstance(errors[0], (DataLoss, NotFound, BadRequest, Unauthorized))
    ):
        kind = type(errors[0])
    kept = ""
    if part is not None and part.done:
        kept = f"; {part.done_bytes} of {part.size} bytes kept, run the same download again to resume"
    return kind(f"cannot fetch {name}: {reasons or 'no holder answered'}{kept}")


@dataclass
class _Worker:
    """One worker thread's state, for the watchdog."""

    holder: Holder
    job: Job | None = None
    last_progress: float = 0.0
    lane: LaneTransport | None = None
    stream: StreamTransport | None = None


class _PieceSink:
    """Writes a job's bytes in place and journals each of its pieces as the piece's last byte lands."""

    def __init__(self, scheduler: Scheduler, worker: _Worker, pieces: list[int], lane: bool) -> None:
        self.scheduler = scheduler
        self.worker = worker
        self.queue = list(pieces)
        self.lane = lane
        self.done: set[int] = set()
        offset, length = scheduler.part.piece_range(pieces[0])
        self.boundary = offset + length

    def write(self, position: int, block: memoryview) -> bool:
        scheduler, part = self.scheduler, self.scheduler.part
        part.write(position, block)
        n = len(block)
        holder = self.worker.holder
        holder.sent += n
        if self.lane:
            holder.lane_sent += n
        self.worker.last_progress = scheduler.clock()
        end = position + n
        while self.queue and end >= self.boundary:
            piece = self.queue.pop(0)
            part.mark_done(piece)
            self.done.add(piece)
            scheduler.hasher.piece_done()
            if self.queue:
                self.boundary += part.piece_range(self.queue[0])[1]
        return not scheduler.stopping


class Scheduler:
    """Fetches the partial file's missing pieces from the live holders; see the module's docstring."""

    def __init__(
        self,
        content: Content,
        part: PartialFile,
        holders: list[Holder],
        options: DownloadOptions,
        hasher: Hasher,
        *,
        retry_deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.content = content
        self.part = part
        self.holders = holders
        self.options = options
        self.hasher = hasher
        self.retry_deadline = retry_deadline
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: list[int] = []
        self._in_flight = 0
        self._halt = Cancel()  # cancelled when the run stops: every wait and request of a worker ends
        self._stopped = threading.Event()  # set at the same time, for pauses (Backoff.pause)
        self._workers: list[_Worker] = []
        self._crash: BaseException | None = None

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Fetch every missing piece; return when all are in, raise failure() when no holder can help.

        Whatever ends the run (done, failed, Ctrl-C in the caller's thread), the workers are
        stopped and joined before it returns or raises.
        """
        self._pending = self.part.missing()
        live = [h for h in self.holders if h.alive][: self.options.max_sources]
        limit = MAX_STREAMS if self.options.lanes else MAX_STREAMS_WITHOUT_LANES
        per_source = max(1, min(self.options.streams_per_source, limit // max(1, len(live))))
        threads = []
        if self._pending:
            for holder in live:
                for _ in range(per_source):
                    worker = _Worker(holder, last_progress=self.clock())
                    self._workers.append(worker)
                    holder.workers += 1
                    thread = threading.Thread(
                        target=self._work, args=(worker,), name=f"p2p-fetch-{holder.name}", daemon=True
                    )
                    threads.append(thread)
        try:
            for thread in threads:
                thread.start()
            self._watch(threads)
        finally:
            self._stop("the download is over")
            for thread in threads:
                thread.join()
        if self._crash is not None:
            raise self._crash
        if len(self.part.done) < self.part.pieces:
            raise failure(self.content.name, self.holders, self.part)

    def _watch(self, threads: list[threading.Thread]) -> None:
        """Wait for the workers (or every piece), report progress; cancel requests stalled for stall_timeout."""
        progress = self.options.progress
        reported = 0
        stall = self.options.stall_timeout
        while True:
            alive = [t for t in threads if t.is_alive()]
            if alive:
                alive[0].join(WATCH_INTERVAL)
            received = sum(h.sent for h in self.holders)
            if progress and received > reported:
                progress(received - reported)
                reported = received
            if not alive or len(self.part.done) == self.part.pieces or self.stopping:
                return
            now = self.clock()
            for worker in self._workers:
                job = worker.job
                if job is not None and now - worker.last_progress > stall:
                    holder = worker.holder
                    holder.error = holder.error or Unavailable(f"{holder.name} sent nothing for {stall:g}s")
                    job.cancel.cancel("stalled")

    def _stop(self, reason: str) -> None:
        with self._cond:
            self._stopped.set()
            self._cond.notify_all()
            self._halt.cancel(reason)
            jobs = [w.job for w in self._workers if w.job is not None]
        for job in jobs:
            job.cancel.cancel(reason)

    # -- the pool of pieces ---------------------------------------------------------------------------
    def _next_job(self, worker: _Worker, by_lane: bool) -> tuple[Job, _PieceSink] | None:
        """The lowest missing pieces as this worker's next job; None when nothing is left (or the run stops)."""
        with self._cond:
            while not self._pending and self._in_flight and not self.stopping:
                self._cond.wait(0.5)
            if not self._pending or self.stopping:
                return None
            most = self._lane_run() if by_lane else 1
            run = [self._pending.pop(0)]
            while len(run) < most and self._pending and self._pending[0] == run[-1] + 1:
                run.append(self._pending.pop(0))
            self._in_flight += len(run)
            offset = self.part.piece_range(run[0])[0]
            last_offset, last_length = self.part.piece_range(run[-1])
            sink = _PieceSink(self, worker, run, by_lane)
            job = Job(offset, last_offset + last_length - offset, sink)
            worker.job = job
            worker.last_progress = self.clock()
            return job, sink

    def _give_back(self, worker: _Worker, sink: _PieceSink) -> None:
        """The job's pieces come back: those not done return to the pool."""
        with self._cond:
            worker.job = None
            pieces = sink.queue
            self._in_flight -= len(pieces) + len(sink.done)
            if pieces:
                self._pending.extend(pieces)
                self._pending.sort()
            self._cond.notify_all()

    def _lane_run(self) -> int:
        """Pieces per lane ticket: long runs, but short enough that every worker gets a share."""
        workers = sum(1 for w in self._workers if w.holder.alive) or 1
        return max(1, min(LANE_RUN_PIECES, len(self._pending) // (2 * workers)))

    def _others_alive(self, holder: Holder) -> bool:
        return any(h.alive and h is not holder and h.workers for h in self.holders)

    # -- one worker ---------------------------------------------------------------------------------
    def _backoff(self) -> Backoff:
        """Pauses between tries of a busy or unreachable holder, until the download's retry deadline."""
        return Backoff(max(0.0, self.retry_deadline - self.clock()), clock=self.clock)

    def _work(self, worker: _Worker) -> None:
        holder = worker.holder
        given_up: P2PError | None = None
        try:
            given_up = self._serve(worker)
        except BaseException as err:  # noqa: BLE001 - a full disk or a bug: the whole run stops, the caller raises it
            with self._cond:
                self._crash = self._crash or err
            self._stop("a worker failed")
        finally:
            with self._cond:
                holder.workers -= 1
                if holder.workers == 0 and given_up is not None and not self.stopping:
                    holder.error = holder.error or given_up  # its last worker gave up on it
                self._cond.notify_all()

    def _serve(self, worker: _Worker) -> P2PError | None:
        """Fetch job after job from the worker's holder; the error to give the holder up with, if any."""
        holder = worker.holder
        backoff = self._backoff()
        transfer = self._ready(holder, backoff)
        if transfer is None:
            return None
        while holder.alive and not self.stopping:
            by_lane = not holder.lane_off
            taken = self._next_job(worker, by_lane)
            if taken is None:
                return None
            job, sink = taken
            try:
                outcome = self._transport(worker, transfer, by_lane).fetch(job)
            finally:
                self._give_back(worker, sink)
            if sink.done:
                backoff = self._backoff()  # the next refusal starts with a short pause again
            retry = self._settle(holder, job, outcome)
            if retry is not None and not backoff.pause(self._stopped):
                return backoff.exhausted(retry)
        return None

    def _transport(self, worker: _Worker, transfer: TransferClient, by_lane: bool) -> LaneTransport | StreamTransport:
        options = self.options
        if by_lane:
            if worker.lane is None:
                worker.lane = LaneTransport(
                    worker.holder.name,
                    transfer,
                    self.content,
                    connect_timeout=options.connect_timeout,
                    lane_connect_timeout=options.lane_connect_timeout,
                    stall_timeout=options.stall_timeout,
                )
            return worker.lane
        if worker.stream is None:
            worker.stream = StreamTransport(worker.holder.name, transfer, self.content, chunk_size=options.chunk_size)
        return worker.stream

    def _settle(self, holder: Holder, job: Job, outcome: Outcome) -> P2PError | None:
        """Act on a job's outcome; return the error to pause on before the holder's next try, if any."""
        verdict, error = outcome.verdict, outcome.error
        if verdict is Verdict.NO_LANE:
            holder.lane_off = holder.lane_off or (error.detail if error else "no lane")
        elif verdict is Verdict.BUSY:
            return error
        elif verdict is Verdict.CUT and holder.alive and not self._others_alive(holder):
            return error  # the only holder left, and not a stall: it may be back in a moment
        elif verdict in (Verdict.CUT, Verdict.GONE):
            holder.error = holder.error or error
        elif verdict is Verdict.STALLED:
            stall = self.options.stall_timeout
            holder.error = holder.error or Unavailable(f"{holder.name} sent nothing for {stall:g}s")
        return None

    def _ready(self, holder: Holder, backoff: Backoff) -> TransferClient | None:
        """The holder's client once it answers; None when it is given up (others can do the work, or time is up)."""
        while not self.stopping:
            try:
                transfer = holder.client(self.options)
                transfer.wait_ready(self._halt)
                return transfer
            except (Unavailable, Busy) as err:
                if self.stopping:
                    return None
                if not holder.alive or self._others_alive(holder) or not backoff.pause(self._stopped):
                    holder.error = holder.error or backoff.exhausted(err)
                    return None
            except P2PError as err:
                holder.error = holder.error or err
                return None
        return None
