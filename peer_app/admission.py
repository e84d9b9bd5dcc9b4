"""Which calls a peer's gRPC server takes on: transfer slots, and the link of the chain that admits.

Admission happens when a call starts, before anything is read from it: a call either gets a
slot at once or is refused at once (Busy), so a refused call never holds a thread. A slot is
one of `total`; one connection (one client channel) may hold at most `per_connection` of them
and one address at most `per_address` (0: no limit of that kind), so one client cannot use
up a peer alone. Transfer calls share the transfer slots; health checks and reflection have
slots of their own, so transfers never crowd them out.

Once admitted, a call is watched: its client must keep the pace of peer_app/pace.py, or the
watchdog cuts it (grpc.ServicerContext.cancel()) and the slot comes back. A fast-lane ticket
keeps its OpenLane call's slot until its bytes are sent (keep_slot).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from common.config import NodeConfig
from common.errors import Busy, Unavailable
from common.rpc import FILE_TRANSFER
from peer_app.interceptor import CallInterceptor, RpcCall, closing, payload
from peer_app.pace import Limits, Progress, Watchdog, limits_of

_admitted: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("p2p_admitted", default=None)


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


class AdmissionControl(CallInterceptor):
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

    @contextmanager
    def around(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        transfer = call.service == FILE_TRANSFER
        admission = self.transfers if transfer else self.control
        ticket = admission.admit(call.peer, f"peer {self.peer_name}")
        progress = Progress(self.transfer_limits if transfer else self.control_limits, what=call.method)
        progress.ticket = ticket
        _admitted.set(self.watchdog.watch(progress, context.cancel))
        try:
            yield
        finally:
            if progress.cut:
                call.cut, call.cut_reason = True, progress.cut
            progress.release()

    def requests(self, call: RpcCall, requests: Iterator[Any]) -> Iterator[Any]:
        progress = _admitted.get()
        assert progress is not None  # read inside around()
        while True:
            progress.wait()
            try:
                message = next(requests)
            except StopIteration:
                if progress.cut:  # a cut can look like the end of the stream
                    raise Unavailable(f"cut: {progress.cut}") from None
                progress.done(0)  # the client is done: what follows (storing, registering) is ours
                return
            progress.done(payload(message))
            yield message

    def responses(self, call: RpcCall, responses: Iterator[Any]) -> Iterator[Any]:
        progress = _admitted.get()
        assert progress is not None
        with closing(responses):
            for response in responses:
                progress.wait()  # until gRPC asks for the next one: the client made room for this one
                yield response
                progress.done(payload(response))


def keep_slot() -> Callable[[], None]:
    """Keep the running call's transfer slot after the call ends; return what gives it back.

    For a lane ticket (OpenLane): the bytes go later, over the lane, and the slot (still
    counted against the caller's connection) stays taken until they are sent or the ticket
    expires. Called outside an admitted call (no admission link), it returns a no-op.
    """
    progress = _admitted.get()
    ticket = progress.ticket if progress is not None else None
    if progress is None or ticket is None:
        return lambda: None
    progress.ticket = None  # the call's end no longer gives it back
    return ticket.release


CONTROL_CALLS_PER_CONNECTION = 4  # health checks, reflection: one client connection's share
CONTROL_IDLE_TIMEOUT = 2.0  # seconds such a call may wait for its request (a few bytes)


def admission_control(config: NodeConfig, watchdog: Watchdog) -> AdmissionControl:
    """The admission link of a peer's gRPC chain, from its settings."""
    s = config.settings
    return AdmissionControl(
        config.name,
        transfers=Admission(
            s.max_concurrent_transfers,
            per_connection=s.transfer_slots_per_connection,
            per_address=s.transfer_slots_per_address,
        ),
        transfer_limits=limits_of(s),
        control=Admission(1 << 20, per_connection=CONTROL_CALLS_PER_CONNECTION, what="health and reflection calls"),
        control_limits=Limits(min(CONTROL_IDLE_TIMEOUT, s.transfer_idle_timeout or CONTROL_IDLE_TIMEOUT), 0, 0),
        watchdog=watchdog,
    )
