"""Which calls a peer's gRPC server takes on, and which it cuts because their client keeps it waiting.

Admission happens when a call starts, before anything is read from it: a call either gets a
slot at once or is refused at once (Busy), so a refused call never holds a thread. A slot is
one of `total`; one connection (one client channel) may hold at most `per_connection` of them
and one address at most `per_address` (0: no limit of that kind), so one client cannot use
up a peer alone.

Once admitted, a call is watched. Only the time spent waiting on the client counts: for a
stream the client sends, the wait for its next message; for a stream it reads, the wait for
the flow-control window to take the next message. Two limits apply:

- idle: one such wait may last at most `idle_timeout` seconds (an Upload that sends nothing,
  a Download whose client stopped reading or was SIGSTOPped);
- stall: a call earns `1 / min_rate` seconds of waiting per byte it moves, up to
  `stall_timeout` seconds in hand, and starts with that much; a client that trickles (a few
  bytes just inside the idle limit, again and again) runs out and is cut.

A cut call is cancelled from the watchdog's thread (grpc.ServicerContext.cancel()): gRPC
fails the blocked read or send, the handler's thread unwinds and gives its slot back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from common.config import NodeConfig
from common.errors import Busy
from common.rpc import FILE_TRANSFER
from peer_app.interceptor import CallHook, RpcCall, current_call

log = logging.getLogger(__name__)


def address_of(peer: str) -> str:
    """The client's address without its port, from grpc's peer string.

    "ipv4:127.0.0.1:50312" -> "ipv4:127.0.0.1", "ipv6:[::1]:50312" -> "ipv6:[::1]";
    anything else (a unix socket) is its own address.
    """
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class Ticket:
    """One admitted call's slot; release() gives it back (once, however often it is called)."""

    __slots__ = ("_admission", "connection", "address", "_held")

    def __init__(self, admission: Admission, connection: str, address: str) -> None:
        self._admission = admission
        self.connection = connection
        self.address = address
        self._held = True

    def release(self) -> None:
        self._admission._release(self)


class Admission:
    """`total` slots with a share per connection and per address; admit() never waits."""

    def __init__(self, total: int, *, per_connection: int = 0, per_address: int = 0, what: str = "transfers") -> None:
        self.total = max(1, total)
        self.per_connection = per_connection if 0 < per_connection < self.total else self.total
        self.per_address = per_address if 0 < per_address < self.total else self.total
        self.what = what
        self._lock = threading.Lock()
        self._in_use = 0
        self._by_connection: dict[str, int] = {}
        self._by_address: dict[str, int] = {}
        self.refused = 0  # calls refused since the start, for the log and /metrics

    @property
    def in_use(self) -> int:
        return self._in_use

    def admit(self, peer: str, name: str = "this peer") -> Ticket:
        """A slot for a call from peer (grpc's context.peer()), or Busy naming the limit it hit."""
        address = address_of(peer)
        with self._lock:
            if self._in_use >= self.total:
                limit = f"its limit of {self.total} concurrent {self.what}"
            elif self._by_connection.get(peer, 0) >= self.per_connection:
                limit = f"its limit of {self.per_connection} concurrent {self.what} per connection"
            elif self._by_address.get(address, 0) >= self.per_address:
                limit = f"its limit of {self.per_address} concurrent {self.what} per client address"
            else:
                self._in_use += 1
                self._by_connection[peer] = self._by_connection.get(peer, 0) + 1
                self._by_address[address] = self._by_address.get(address, 0) + 1
                return Ticket(self, peer, address)
            self.refused += 1
        raise Busy(f"{name} is at {limit}; retry shortly")

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if not ticket._held:
                return
            ticket._held = False
            self._in_use -= 1
            for table, key in ((self._by_connection, ticket.connection), (self._by_address, ticket.address)):
                left = table[key] - 1
                if left:
                    table[key] = left
                else:
                    del table[key]


@dataclass(frozen=True)
class Limits:
    """How long a call's client may keep it waiting (see the module's docstring)."""

    idle_timeout: float = 10.0  # seconds one wait on the client may last; 0: no limit
    stall_timeout: float = 30.0  # seconds of waiting a call has in hand; 0: no limit
    min_rate: float = 8192.0  # bytes per second of waiting that earn it back


class Progress:
    """One call's waits on its client, reported by the thread that serves it; read by the watchdog.

    `cut` is the reason the watchdog cut the call (None while it runs): a handler that
    finds its stream ended must check it, since a cut can also look like a clean end.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic, *, what: str = "call") -> None:
        self.limits = limits
        self.clock = clock
        self.what = what
        self.waiting_since: float | None = None
        self.budget = limits.stall_timeout  # seconds of waiting in hand when the current wait began
        self.moved = 0
        self.cut: str | None = None
        self.cancel: Callable[[], object] = lambda: None
        self.ticket: Ticket | None = None
        self._watchdog: Watchdog | None = None

    def wait(self) -> None:
        """The handler now waits on the client (for a message, or for room to send one)."""
        self.waiting_since = self.clock()

    def done(self, nbytes: int) -> None:
        """The wait ended with nbytes moved."""
        since, self.waiting_since = self.waiting_since, None
        if since is None:
            return
        self.moved += nbytes
        limits = self.limits
        if limits.stall_timeout > 0:
            earned = nbytes / limits.min_rate if limits.min_rate > 0 else limits.stall_timeout
            self.budget = min(limits.stall_timeout, self.budget - (self.clock() - since) + earned)

    def overdue(self, now: float | None = None) -> str | None:
        """Why the call should be cut now, or None."""
        since = self.waiting_since
        if since is None:
            return None
        waited = (self.clock() if now is None else now) - since
        limits = self.limits
        if limits.idle_timeout > 0 and waited >= limits.idle_timeout:
            return f"its client kept it waiting {waited:.1f}s on one message (limit {limits.idle_timeout:g}s)"
        if limits.stall_timeout > 0 and waited >= self.budget:
            return (
                f"its client moved {self.moved} bytes while keeping it waiting past "
                f"{limits.stall_timeout:g}s at under {limits.min_rate:g} bytes/s"
            )
        return None

    def release(self) -> None:
        """The call ended: give its slot back and stop watching it (idempotent)."""
        if self.ticket is not None:
            self.ticket.release()
        if self._watchdog is not None:
            self._watchdog.forget(self)


class Watchdog:
    """One thread that cuts watched calls whose client keeps them waiting too long.

    The thread runs while calls are watched; when the last one is gone it waits quiet_after
    seconds more, calls on_quiet() once (e.g. hand freed memory back), and exits.
    """

    def __init__(
        self,
        interval: float = 0.25,
        *,
        on_quiet: Callable[[], object] | None = None,
        quiet_after: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.on_quiet = on_quiet
        self.quiet_after = quiet_after
        self.clock = clock
        self._calls: set[Progress] = set()
        self._lock = threading.Lock()
        self._running = False
        self.cut = 0  # calls cut since the start

    def watch(self, progress: Progress, cancel: Callable[[], object]) -> Progress:
        progress.cancel = cancel
        progress._watchdog = self
        with self._lock:
            self._calls.add(progress)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="grpc-watchdog", daemon=True).start()
        return progress

    def forget(self, progress: Progress) -> None:
        with self._lock:
            self._calls.discard(progress)

    @property
    def watched(self) -> int:
        return len(self._calls)

    def check(self) -> list[Progress]:
        """Cut what is overdue now; return the calls cut."""
        now = self.clock()
        with self._lock:
            calls = list(self._calls)
        cut = []
        for progress in calls:
            reason = progress.overdue(now)
            if reason is None or progress.cut is not None:
                continue
            progress.cut = reason
            self.forget(progress)
            try:
                progress.cancel()
            except Exception:  # a call that ended meanwhile: nothing to cut
                log.debug("cancel of %s failed", progress.what, exc_info=True)
            self.cut += 1
            cut.append(progress)
        return cut

    def _run(self) -> None:
        quiet_since: float | None = None
        while True:
            time.sleep(self.interval)
            self.check()
            with self._lock:
                if self._calls:
                    quiet_since = None
                    continue
                now = self.clock()
                if quiet_since is None:
                    quiet_since = now
                if now - quiet_since < self.quiet_after:
                    continue
                self._running = False
            if self.on_quiet is not None:
                try:
                    self.on_quiet()
                except Exception:
                    log.exception("the watchdog's on_quiet failed")
            return


class AdmissionHook(CallHook):
    """Admits each call before it reads anything (a slot, or Busy at once), then has it watched.

    Transfer calls (FileTransfer) share the transfer slots; every other call (health,
    reflection) has its own admission, so transfers can never crowd out a health check.
    """

    def __init__(
        self,
        peer_name: str,
        *,
        transfers: Admission,
        transfer_limits: Limits,
        control: Admission,
        control_limits: Limits,
        watchdog: Watchdog,
    ) -> None:
        self.peer_name = peer_name
        self.transfers = transfers
        self.transfer_limits = transfer_limits
        self.control = control
        self.control_limits = control_limits
        self.watchdog = watchdog

    def started(self, call: RpcCall, context: grpc.ServicerContext) -> None:
        transfer = call.service == FILE_TRANSFER
        admission = self.transfers if transfer else self.control
        ticket = admission.admit(call.peer, f"peer {self.peer_name}")
        progress = Progress(self.transfer_limits if transfer else self.control_limits, what=call.method)
        progress.ticket = ticket
        call.progress = self.watchdog.watch(progress, context.cancel)

    def ended(self, call: RpcCall) -> None:
        if call.progress is not None:
            call.progress.release()


def keep_slot() -> Callable[[], None]:
    """Keep the running call's transfer slot after the call ends; return what gives it back.

    For a lane ticket (OpenLane): the bytes go later, over the lane, and the slot (still
    counted against the caller's connection) stays taken until they are sent or the ticket
    expires. Called with no admitted call (no interceptor), it returns a no-op.
    """
    call = current_call()
    progress = call.progress if call is not None else None
    ticket = progress.ticket if progress is not None else None
    if progress is None or ticket is None:
        return lambda: None
    progress.ticket = None  # the call's end no longer gives it back
    return ticket.release


CONTROL_CALLS_PER_CONNECTION = 4  # health checks, reflection: one client connection's share
CONTROL_IDLE_TIMEOUT = 2.0  # seconds such a call may wait for its request (a few bytes)


def admission_hook(config: NodeConfig, watchdog: Watchdog) -> AdmissionHook:
    """The hook for a peer's gRPC server, from its settings."""
    s = config.settings
    return AdmissionHook(
        config.name,
        transfers=Admission(
            s.max_concurrent_transfers,
            per_connection=s.transfer_slots_per_connection,
            per_address=s.transfer_slots_per_address,
        ),
        transfer_limits=Limits(s.transfer_idle_timeout, s.transfer_stall_timeout, s.transfer_min_rate),
        control=Admission(1 << 20, per_connection=CONTROL_CALLS_PER_CONNECTION, what="health and reflection calls"),
        control_limits=Limits(min(CONTROL_IDLE_TIMEOUT, s.transfer_idle_timeout or CONTROL_IDLE_TIMEOUT), 0, 0),
        watchdog=watchdog,
    )
