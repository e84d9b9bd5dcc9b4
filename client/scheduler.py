"""The download's scheduler: what to fetch from whom, measured as it goes.

The scheduler owns the file's missing bytes, each holder's state and the worker threads (a
few per holder) that drive the transports (client/transports.py). What is missing is a
list of spans (ranges of the file); a worker asks for its holder's next request and the
scheduler cuts it from the lowest span, sized by what it measured of that holder
(client/pace.py): about 1.5 s of the holder's own rate, smaller for a slow holder and near
the end. When nothing is left to hand out, an idle holder may take over part of a range
still in flight at a slower one (endgame): while the slower one's bytes flow, the span is
split where both would finish together and the other request stops at the cut; once it went
quiet, the idle holder races the whole rest: both write through the same span, whose
frontier (the bytes written so far from its start) makes every byte land in the file once;
the first to reach the span's end wins and the other request is cancelled at once (lane
socket shut down, stream call cancelled). Bytes that arrive for an offset already written
are counted as duplicates and dropped.

A watchdog on the calling thread samples each holder's rate, reports progress and judges
each request by its holder's own pace: no byte for a few of its usual gaps (at least a
second) hands the rest of the span to the others and rests the holder, which may serve
again later; a holder that sent nothing for stall_timeout is given up. A lane that cannot
serve makes its holder use the stream; a busy holder is asked again after a growing pause
(client/retry.py); a holder that holds other content is given up.

Every piece is journalled as its last byte lands (client/partial.py). The run ends as soon
as every piece is in: every worker is stopped and joined before run() returns or raises,
so the caller may close channels and the file. When pieces remain and no holder can help,
`failure()` gives the one error that says why.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client.cancel import Cancel
from client.lane import PipedBlock
from client.options import MAX_STREAMS, MAX_STREAMS_WITHOUT_LANES, DownloadOptions
from client.pace import BLOCK, MIN_REQUEST, Meter, lane_depth, race_gain, request_size, share_of
from client.partial import Hasher, PartialFile
from client.retry import Backoff
from client.transports import Content, Job, LaneTransport, Outcome, StreamTransport, Verdict
from common.credentials import Credentials
from common.errors import BadRequest, Busy, DataLoss, NotFound, P2PError, Unauthorized, Unavailable

if TYPE_CHECKING:
    from client.transfer import Content as Said  # what a holder says a file is
    from client.transfer import TransferClient

WATCH_INTERVAL = 0.1
MAX_CONCURRENT_STREAMS = 4  # gRPC streams at once (each holds ~10 MiB of buffers: the client stays under 100 MiB)
LATE_TICK = 0.5  # a watchdog tick this late means this process was not running: judge nobody's pace then


@dataclass
class Holder:
    """One holder of the content as this download sees it: how to reach it, how it is doing."""

    name: str
    address: str
    credentials: Credentials
    entry: dict = field(default_factory=dict)  # what /locate said about it
    transfer: TransferClient | None = None
    error: P2PError | None = None  # why it was given up (None while it may serve)
    sent: int = 0  # bytes of the file it delivered in this run (its share; duplicates not counted)
    lane_sent: int = 0  # of which over its lane
    lane_off: str = ""  # why its lane is not used ("" while it is worth trying)
    workers: int = 0
    vouched: bool = False  # it proved itself (options.holder_check), or nothing asks it to
    vouching: threading.Lock = field(default_factory=threading.Lock)
    meter: Meter = field(default_factory=Meter)
    requests: int = 0  # requests in flight
    rest_until: float = 0.0  # asked nothing before then (it lost its pace or was cut)
    backoff: Backoff | None = None  # its pauses since its last good request
    quiet_since: float | None = None  # owing bytes and sending none since then
    trouble: str = ""  # the last thing that went wrong with it (it rested, or was given up)

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

    def stat(self, options: DownloadOptions, file: str) -> Said:
        """What it says file is; with options.holder_check, once it proved it is the member named."""
        if options.holder_check is None:
            return self.client(options).stat(file)
        content = options.holder_check(self.client(options), self.name, file)
        self.vouched = True
        return content

    def vouch(self, options: DownloadOptions, content: Content) -> None:
        """With options.holder_check: it proves itself, holding content, before it serves a byte; else DataLoss."""
        if options.holder_check is None or self.vouched:
            return
        with self.vouching:
            if self.vouched:
                return
            said = self.stat(options, content.name)
            if (said.size, said.sha256) != (content.size, content.sha256):
                raise DataLoss(f"{self.name} holds other content (sha256 {said.sha256[:12]})")

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


def _ms(holder: Holder) -> str:
    usual = holder.meter.gap if holder.meter.gap is not None else holder.meter.latency
    return f"{usual * 1000:.0f} ms" if usual is not None else "?"


class Span:
    """A range of the file still to write: [frontier, end); frontier grows as bytes land."""

    def __init__(self, frontier: int, end: int) -> None:
        self.frontier = frontier
        self.end = end
        self.attempts: list[Attempt] = []  # requests fetching it now (two in a race)
        self.lock = threading.Lock()  # held while a block is written: one writer at a time
        self.done = False

    def __lt__(self, other: Span) -> bool:
        return self.frontier < other.frontier


class Attempt:
    """One request: a holder fetching [span.frontier at its start, span.end); the sink of its job."""

    def __init__(self, scheduler: Scheduler, holder: Holder, span: Span, lane: bool, now: float) -> None:
        self.scheduler = scheduler
        self.holder = holder
        self.span = span
        self.lane = lane
        self.job = Job(span.frontier, span.end - span.frontier, self)
        self.started = now
        self.last_block: float | None = None
        self.writing = False  # inside the file's write: a slow disk is not the holder's fault
        self.detached = False  # no longer counted on: its bytes are dropped

    def write(self, position: int, block: memoryview | PipedBlock) -> bool:
        return self.scheduler._write(self, position, block)


@dataclass
class _Worker:
    holder: Holder
    attempt: Attempt | None = None
    lane: LaneTransport | None = None
    stream: StreamTransport | None = None


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
        compare: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.content = content
        self.part = part
        self.holders = holders
        self.options = options
        self.hasher = hasher
        self.clock = clock
        self.duplicates = 0  # bytes received for offsets another request had written (endgame), or dropped
        self.sources: dict[int, set[str]] = {}  # piece -> holders that wrote bytes of it in this run
        self.compare = compare  # read what each block replaces: healing a file whose digest did not match
        self.differ: set[int] = set()  # pieces whose new bytes differ from those they replaced (compare only)
        self._lock = threading.Condition()  # the pool, the spans' requests, the pieces' counts, holder state
        self._pending: list[Span] = []  # not being fetched, lowest frontier first
        self._flying: list[Span] = []  # being fetched
        self._left: list[int] = []  # bytes still to write, per piece
        self._pieces_left = 0
        self._halt = Cancel()  # cancelled when the run stops: every wait and request of a worker ends
        self._stopped = threading.Event()  # set at the same time, for pauses (Backoff.pause)
        self._workers: list[_Worker] = []
        self._crash: BaseException | None = None
        self._stream_slots = threading.BoundedSemaphore(MAX_CONCURRENT_STREAMS)

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Fetch every missing piece; return when all are in, raise failure() when no holder can help.

        Whatever ends the run (done, failed, Ctrl-C in the caller's thread), the workers are
        stopped and joined before it returns or raises.
        """
        self._plan()
        live = [h for h in self.holders if h.alive][: self.options.max_sources]
        limit = MAX_STREAMS if self.options.lanes else MAX_STREAMS_WITHOUT_LANES
        per_source = max(1, min(self.options.streams_per_source, limit // max(1, len(live))))
        threads = []
        if self._pieces_left:
            for holder in live:
                for _ in range(per_source):
                    worker = _Worker(holder)
                    self._workers.append(worker)
                    holder.workers += 1
                    name = f"p2p-fetch-{holder.name}"
                    threads.append(threading.Thread(target=self._work, args=(worker,), name=name, daemon=True))
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
        if self._pieces_left:
            raise failure(self.content.name, self.holders, self.part)

    def _plan(self) -> None:
        """One span per run of consecutive missing pieces."""
        part = self.part
        self._left = [0] * part.pieces
        for index in part.missing():
            offset, length = part.piece_range(index)
            self._left[index] = length
            self._pieces_left += 1
            if self._pending and self._pending[-1].end == offset:
                self._pending[-1].end = offset + length
            else:
                self._pending.append(Span(offset, offset + length))

    def _watch(self, threads: list[threading.Thread]) -> None:
        """Wait for every piece (or every worker to give up): report progress, sample rates, judge paces."""
        progress = self.options.progress
        reported = 0
        last = self.clock()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if alive:
                alive[0].join(WATCH_INTERVAL)
            written = sum(h.sent for h in self.holders)
            if progress and written > reported:
                progress(written - reported)
                reported = written
            if not alive or not self._pieces_left or self.stopping:
                return
            now = self.clock()
            with self._lock:
                for holder in self.holders:
                    holder.meter.tick(now, now - last)
                if now - last < LATE_TICK:
                    self._judge(now)
            last = now

    def _judge(self, now: float) -> None:
        """Requests whose holder lost its pace go back to the pool; a holder silent for stall_timeout is given up."""
        stall = self.options.stall_timeout
        for holder in self.holders:
            if holder.alive and holder.quiet_since is not None and now - holder.quiet_since > stall:
                self._give_up(holder, Unavailable(f"{holder.name} sent nothing for {stall:g}s"), "stalled")
        for span in list(self._flying):
            for attempt in list(span.attempts):
                if attempt.writing:
                    continue
                started = attempt.last_block is not None
                quiet = now - (attempt.last_block if attempt.last_block is not None else attempt.started)
                holder = attempt.holder
                if quiet > holder.meter.silence_limit(stall, started):
                    lost = Unavailable(f"lost its pace: nothing for {quiet:.1f}s (usually a block every {_ms(holder)})")
                    self._rest(holder, lost, now)
                    self._detach(attempt, f"{holder.name} lost its pace: nothing for {quiet:.1f}s")

    def _stop(self, reason: str) -> None:
        with self._lock:
            self._stopped.set()
            self._lock.notify_all()
            attempts = [a for s in self._flying for a in s.attempts]
        self._halt.cancel(reason)
        for attempt in attempts:
            attempt.job.cancel.cancel(reason)

    # -- requests -------------------------------------------------------------------------------------
    def _next(self, worker: _Worker, lane: bool) -> Attempt | None:
        """The worker's next request: a cut of the lowest span, else a race in the endgame; None when done."""
        holder = worker.holder
        with self._lock:
            while True:
                if self.stopping or not self._pieces_left or not holder.alive:
                    return None
                now = self.clock()
                if holder.rest_until > now:
                    self._lock.wait(min(holder.rest_until - now, 0.25))
                    continue
                if lane and holder.requests >= lane_depth(holder.meter, holder.workers):
                    self._lock.wait(WATCH_INTERVAL)  # woken when its request ends
                    continue
                span = self._cut(holder) if self._pending else self._race(holder, now)
                if span is None:
                    self._lock.wait(WATCH_INTERVAL)  # rates and paces move: look again
                    continue
                attempt = Attempt(self, holder, span, lane, now)
                span.attempts.append(attempt)
                if holder.requests == 0:
                    holder.meter.busy_since = now
                holder.requests += 1
                if holder.quiet_since is None:
                    holder.quiet_since = now
                worker.attempt = attempt
                return attempt

    def _cut(self, holder: Holder) -> Span:
        """The lowest pending span, cut to what this holder should be asked for now."""
        left = sum(s.end - s.frontier for s in self._pending)
        meters = [h.meter for h in self.holders if h.alive and h.workers]
        share = share_of(holder.meter, meters, holder.workers, left)
        size = request_size(holder.meter, holder.workers, share)
        span = self._pending.pop(0)
        with span.lock:
            cut = -(-(span.frontier + size) // BLOCK) * BLOCK
            if span.end - cut >= MIN_REQUEST // 2:  # what is left is worth a request of its own
                rest = Span(cut, span.end)
                span.end = cut
                self._pending.insert(0, rest)
        self._flying.append(span)
        return span

    def _race(self, holder: Holder, now: float) -> Span | None:
        """A span in flight at another holder that this one would finish clearly sooner (endgame).

        A holder whose bytes still flow keeps the front of its span and this one takes the rest
        (split where both finish together): nothing is fetched twice. Only a span whose holder
        went quiet is raced whole, both requests writing through it.
        """
        best, best_gain, flowing = None, 0.0, False
        for span in self._flying:
            if len(span.attempts) != 1 or span.attempts[0].holder is holder:
                continue
            theirs = span.attempts[0]
            remaining = span.end - span.frontier
            other = theirs.holder
            quiet = now - (theirs.last_block if theirs.last_block is not None else theirs.started)
            if quiet > other.meter.silence_limit(self.options.stall_timeout, theirs.last_block is not None) / 2:
                their_eta = float("inf")
            elif not other.meter.rate:
                continue  # not measured yet and not quiet: nothing says it is slow
            else:
                their_eta = other.meter.eta(remaining, other.requests)
            my_eta = (holder.meter.latency or 0.0) + holder.meter.eta(remaining, holder.requests + 1)
            gain = race_gain(my_eta, their_eta)
            if gain > best_gain:
                best, best_gain, flowing = span, gain, not math.isinf(their_eta)
        if best is not None and flowing:
            return self._split(best, holder) or best
        return best

    def _split(self, span: Span, holder: Holder) -> Span | None:
        """The back of a span in flight at a holder whose bytes flow, cut off for this one; None if too small.

        The cut falls where both would finish together at their measured rates; the other request
        stops at the cut (its writes are clamped to the span's end, and it ends there).
        """
        other = span.attempts[0].holder
        theirs = (other.meter.rate or 0.0) / max(1, other.requests)
        mine = (holder.meter.rate or 0.0) / (holder.requests + 1)
        if theirs <= 0 or mine <= 0:
            return None
        with span.lock:
            remaining = span.end - span.frontier
            take = (remaining / theirs - (holder.meter.latency or 0.0)) / (1 / theirs + 1 / mine)
            cut = -(-(span.end - int(take)) // BLOCK) * BLOCK
            if span.end - cut < MIN_REQUEST // 2 or cut <= span.frontier:
                return None
            back = Span(cut, span.end)
            span.end = cut
        self._flying.append(back)
        return back

    def _write(self, attempt: Attempt, position: int, block: memoryview | PipedBlock) -> bool:
        """A block of a request: written where no other request wrote yet, counted, pieces journalled."""
        n = len(block)
        now = self.clock()
        holder = attempt.holder
        gap = None if attempt.last_block is None else now - attempt.last_block
        attempt.last_block = now
        span = attempt.span
        claim: tuple[int, int] | None = None
        if not attempt.detached and not self.stopping:
            attempt.writing = True
            try:
                with span.lock:  # a range only shrinks under this lock: the clamp keeps a cut request inside it
                    frontier, end = span.frontier, min(position + n, span.end)
                    if end > frontier and not span.done and not attempt.detached:
                        data = block[max(0, frontier - position) : end - position]
                        if self.compare:
                            assert isinstance(data, memoryview)  # a comparing run does not splice
                            self._compare(frontier, data)
                        self.part.write(frontier, data)
                        span.frontier = end
                        claim = (frontier, end)
            finally:
                attempt.writing = False
        with self._lock:  # the watchdog reads the meter under this lock
            if gap is None:
                holder.meter.first_byte(now - attempt.started)
            holder.meter.block(gap, n)
            holder.quiet_since = None
            if claim is None:  # behind the other request of a race, or no longer counted on
                self.duplicates += n
                return not (attempt.detached or span.done or self.stopping)
            start, end = claim
            self.duplicates += n - (end - start)
            holder.sent += end - start
            if attempt.lane:
                holder.lane_sent += end - start
            self._count(holder, start, end)
            if end == span.end and not span.done:
                self._finish(span, attempt)
            return not attempt.detached

    def _compare(self, offset: int, data: memoryview) -> None:
        """Note the pieces where data differs from what the file holds at offset."""
        old = bytearray(len(data))
        self.part.read_into(old, offset)
        if old == data:
            return
        size = self.part.piece_size
        for index in range(offset // size, (offset + len(data) - 1) // size + 1):
            start = max(offset, index * size) - offset
            stop = min(offset + len(data), (index + 1) * size) - offset
            if old[start:stop] != data[start:stop]:
                self.differ.add(index)

    def _count(self, holder: Holder, start: int, end: int) -> None:
        """[start, end) is written: journal each piece whose last byte it was."""
        size = self.part.piece_size
        for index in range(start // size, (end - 1) // size + 1):
            offset, length = self.part.piece_range(index)
            self.sources.setdefault(index, set()).add(holder.name)
            self._left[index] -= min(end, offset + length) - max(start, offset)
            if self._left[index] == 0:
                self.part.mark_done(index)
                self._pieces_left -= 1
                self.hasher.piece_done()
        if not self._pieces_left:
            self._lock.notify_all()

    def _finish(self, span: Span, winner: Attempt) -> None:
        """The span is whole: the other request on it is cancelled at once."""
        span.done = True
        self._flying.remove(span)
        for attempt in list(span.attempts):
            if attempt is not winner:
                self._detach(attempt, f"{winner.holder.name} finished this range first")
        self._lock.notify_all()

    def _detach(self, attempt: Attempt, reason: str = "") -> None:
        """Stop counting on a request (cancelled with reason if given); its span goes back to the pool if alone."""
        if attempt.detached:
            return
        attempt.detached = True
        if reason:
            attempt.job.cancel.cancel(reason)
        span, holder = attempt.span, attempt.holder
        span.attempts.remove(attempt)
        holder.requests -= 1
        if holder.requests == 0:
            holder.meter.busy_since = None
            if holder.rest_until <= self.clock():
                holder.quiet_since = None  # it owes nothing now (it answered, or lost a race): not silent
        if not span.done and not span.attempts:
            self._flying.remove(span)
            bisect.insort(self._pending, span)
        self._lock.notify_all()

    # -- holders --------------------------------------------------------------------------------------
    def _rest(self, holder: Holder, error: P2PError, now: float) -> None:
        """The holder lost its pace or was cut: ask it nothing for a growing pause, then measure it afresh."""
        holder.trouble = error.detail
        if holder.backoff is None:
            holder.backoff = Backoff(self.options.retry_for, clock=self.clock)
        delay = holder.backoff.next_delay()
        if delay is None:
            self._give_up(holder, holder.backoff.exhausted(error), "given up")
            return
        holder.rest_until = max(holder.rest_until, now + delay)
        holder.meter.rate = None
        holder.meter.probe = MIN_REQUEST * 4

    def _give_up(self, holder: Holder, error: P2PError, reason: str) -> None:
        holder.error = holder.error or error
        holder.trouble = f"given up: {holder.error.detail}"
        for span in list(self._flying):
            for attempt in list(span.attempts):
                if attempt.holder is holder:
                    self._detach(attempt, reason)
        self._lock.notify_all()

    # -- one worker -----------------------------------------------------------------------------------
    def _work(self, worker: _Worker) -> None:
        holder = worker.holder
        given_up: P2PError | None = None
        try:
            given_up = self._serve(worker)
        except BaseException as err:  # noqa: BLE001 - a full disk or a bug: the whole run stops, the caller raises it
            with self._lock:
                self._crash = self._crash or err
            self._stop("a worker failed")
        finally:
            with self._lock:
                holder.workers -= 1
                if holder.workers == 0 and given_up is not None and not self.stopping:
                    self._give_up(holder, given_up, "given up")  # its last worker gave up on it
                self._lock.notify_all()

    def _serve(self, worker: _Worker) -> P2PError | None:
        """Fetch request after request from the worker's holder; the error to give the holder up with, if any."""
        holder = worker.holder
        backoff = self._backoff()  # this worker's pauses while its holder is busy
        while not self.stopping:
            transfer = self._ready(holder)
            if transfer is None:
                return None
            lane = not holder.lane_off
            if not lane and not self._stream_slot():
                return None
            try:
                attempt = self._next(worker, lane)
                if attempt is None:
                    return None
                outcome = self._transport(worker, transfer, lane).fetch(attempt.job)
            finally:
                if not lane:
                    self._stream_slots.release()
            retry = self._settle(worker, attempt, outcome)
            if attempt.last_block is not None:
                backoff = self._backoff()  # the next refusal starts with a short pause again
            if retry is not None and not backoff.pause(self._stopped):
                return backoff.exhausted(retry)
        return None

    def _stream_slot(self) -> bool:
        """One of the gRPC stream slots (False when the run stops first)."""
        while not self.stopping:
            if self._stream_slots.acquire(timeout=WATCH_INTERVAL):
                return True
        return False

    def _backoff(self) -> Backoff:
        return Backoff(self.options.retry_for, clock=self.clock)

    def _transport(self, worker: _Worker, transfer: TransferClient, lane: bool) -> LaneTransport | StreamTransport:
        options = self.options
        if lane:
            if worker.lane is None:
                worker.lane = LaneTransport(
                    worker.holder.name,
                    transfer,
                    self.content,
                    connect_timeout=options.connect_timeout,
                    lane_connect_timeout=options.lane_connect_timeout,
                    stall_timeout=options.stall_timeout,
                    splice=not self.compare,  # comparing needs the bytes in a buffer
                )
            return worker.lane
        if worker.stream is None:
            worker.stream = StreamTransport(worker.holder.name, transfer, self.content, chunk_size=options.chunk_size)
        return worker.stream

    def _settle(self, worker: _Worker, attempt: Attempt, outcome: Outcome) -> P2PError | None:
        """Act on a request's outcome; return the error this worker pauses on before its next try, if any."""
        holder, verdict, error = attempt.holder, outcome.verdict, outcome.error
        now = self.clock()
        retry = None
        with self._lock:
            worker.attempt = None
            if verdict is Verdict.DONE:
                holder.backoff = None
                holder.meter.finished(attempt.job.length, now - attempt.started)
            elif verdict is Verdict.NO_LANE:
                holder.lane_off = holder.lane_off or (error.detail if error else "no lane")
            elif verdict is Verdict.BUSY:
                retry = error
            elif verdict is Verdict.CUT:
                self._rest(holder, error or Unavailable(f"{holder.name} was cut off"), now)
            elif verdict in (Verdict.STALLED, Verdict.GONE):
                self._give_up(holder, error or Unavailable(f"{holder.name} failed"), "given up")
            self._detach(attempt)
        return retry

    def _ready(self, holder: Holder) -> TransferClient | None:
        """The holder's client once it answers; None when it is given up or the run stops."""
        while not self.stopping and holder.alive:
            now = self.clock()
            if holder.rest_until > now:
                if self._stopped.wait(holder.rest_until - now):
                    return None
                continue
            try:
                transfer = holder.client(self.options)
                transfer.wait_ready(self._halt)
                holder.vouch(self.options, self.content)
                return transfer
            except (Unavailable, Busy) as err:
                with self._lock:
                    if not self.stopping:
                        self._rest(holder, err, self.clock())
            except P2PError as err:
                with self._lock:
                    self._give_up(holder, err, "given up")
        return None
