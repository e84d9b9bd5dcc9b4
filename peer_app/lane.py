"""The peer's fast lane: ticketed byte ranges sent with sendfile, beside the gRPC stream.

One listener per gRPC process, on an OS-chosen port of the address the gRPC
server binds, so no port is configured anywhere: each ticket names the port.

A ticket is 32 random bytes made by `grant()` when a caller allowed to read asks
over gRPC (`OpenLane`): 16 bytes name the grant in this process's memory, 16
secret bytes prove it. The grant binds the file (name and the stat of the
content the caller was told about), the exact range, the caller's IP address
and an expiry a few seconds ahead; it holds one of the peer's transfer slots
from the moment it is issued. Presenting a ticket removes its grant whatever
the outcome, so a ticket works once; an unredeemed grant expires and gives its
slot back. The secret lives nowhere but in this process and in the caller's
memory: a restarted peer knows no old ticket.

On a redeemed ticket the bytes go from the page cache to the socket with
`os.sendfile` on a blocking socket: no Python touches them. They go in blocks of
a stream message's size (the `chunk_size` setting), and each block is one wait on
the receiver, held to the pace every gRPC stream keeps (peer_app/pace.py): a
block that waits past transfer_idle_timeout, or a receiver that keeps the send
waiting past its stall budget (transfer_stall_timeout, earned back at
transfer_min_rate), is cut by the same watchdog, which shuts the socket down.
The send then ends and its transfer slot comes back. (SO_SNDTIMEO alone would
bound one sendfile call, not the pace: a reader taking a few KiB now and then
keeps every call alive.)
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from common.lane import (
    BUSY,
    FAILED,
    GONE,
    OK,
    REFUSED,
    TICKET_BYTES,
    TICKET_ID_BYTES,
    ProtocolError,
    encode_reply,
    read_hello,
)
from common.net import normal_ip
from common.units import format_rate, format_seconds, format_size
from peer_app.access import peer_ip
from peer_app.pace import Limits, Progress, Watchdog

log = logging.getLogger(__name__)

SEND_BLOCK = 1 << 20  # bytes per paced block (a stream message's default size); the kernel loops inside
# Connections one address may have open before their hello: a client redeems a ticket per
# connection at once, so a few suffice, and a stranger's silent flood cannot fill the table.
HELLOS_PER_ADDRESS = 16


def file_state(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change between a ticket and its bytes: the same inode, size and mtime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def caller_host(peer: str) -> str:
    """The IP address in a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:%5B::1%5D:5"), normalised; "" for others."""
    return normal_ip(peer_ip(peer) or "")


class Refused(Exception):
    """A hello the peer will not serve; the message goes back to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Grant:
    secret: bytes
    name: str
    offset: int
    length: int
    caller: str
    state: tuple[int, int, int, int]
    expires: float
    release: Callable[[], None]  # gives the transfer slot back (called exactly once)


class LaneServer:
    """A TCP listener that serves ticketed ranges of shared files with sendfile.

    open_file(name) opens a shared file for reading (refusing escapes, as the
    gRPC Download does) and raises an exception with a `detail` or a message
    when it cannot; rate, when given, has consume(n) and paces the sender.
    limits is the pace a receiver must keep, block the bytes of one wait on it;
    watchdog cuts the sends that fall behind (the gRPC server's own, so one
    thread watches streams and lanes alike).
    """

    def __init__(
        self,
        host: str,
        open_file: Callable[[str], BinaryIO],
        *,
        ttl: float = 10.0,
        limits: Limits | None = None,
        block: int = SEND_BLOCK,
        watchdog: Watchdog | None = None,
        hello_timeout: float = 5.0,
        max_connections: int = 64,
        hellos_per_address: int = HELLOS_PER_ADDRESS,
        rate=None,
        on_sent: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        port: int = 0,
    ) -> None:
        self.host = host
        self.fixed_port = port  # 0: the OS picks one (each ticket names it)
        self.open_file = open_file
        self.ttl = ttl
        self.limits = limits or Limits()
        self.block = max(1, block)
        self.watchdog = watchdog or Watchdog()
        self.hello_timeout = hello_timeout
        self.rate = rate
        self.on_sent = on_sent or (lambda n: None)
        self.clock = clock
        self.port = 0
        self._grants: dict[bytes, Grant] = {}
        self._lock = threading.Lock()
        self._connections = threading.BoundedSemaphore(max_connections)
        self.hellos_per_address = hellos_per_address
        self._greeting: dict[str, int] = {}  # connections per address still to say hello
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life ---------------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind the fixed port (or an OS-chosen one) on host, start accepting; return the port."""
        self._listener = _listen(self.host, self.fixed_port)
        self._listener.settimeout(1.0)  # accept wakes up now and then to expire unredeemed tickets
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="p2p-lane-accept", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop accepting and give back every outstanding grant's slot (connections being served finish)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            grants, self._grants = list(self._grants.values()), {}
        for grant in grants:
            grant.release()

    # -- tickets ------------------------------------------------------------------------------------
    def grant(
        self,
        name: str,
        offset: int,
        length: int,
        caller: str,
        state: tuple[int, int, int, int],
        release: Callable[[], None],
    ) -> bytes:
        """A one-time ticket for [offset, offset+length) of name, for caller only, valid for ttl seconds.

        The caller of grant() has taken a transfer slot; release gives it back
        once: after the bytes are sent, or when the ticket is refused or expires.
        """
        ticket_id = secrets.token_bytes(TICKET_ID_BYTES)
        secret = secrets.token_bytes(TICKET_BYTES - TICKET_ID_BYTES)
        grant = Grant(secret, name, offset, length, normal_ip(caller), state, self.clock() + self.ttl, release)
        with self._lock:
            self._grants[ticket_id] = grant
        self._sweep()
        return ticket_id + secret

    @property
    def outstanding(self) -> int:
        """Tickets issued and neither presented nor expired."""
        with self._lock:
            return len(self._grants)

    def _sweep(self) -> None:
        """Drop expired grants and give their slots back."""
        now = self.clock()
        with self._lock:
            expired = [tid for tid, g in self._grants.items() if g.expires < now]
            grants = [self._grants.pop(tid) for tid in expired]
        for grant in grants:
            grant.release()

    def redeem(self, ticket: bytes, name: str, offset: int, length: int, caller: str) -> Grant:
        """The grant this hello may use, removed from the table; Refused (slot given back) otherwise."""
        with self._lock:
            grant = self._grants.pop(ticket[:TICKET_ID_BYTES], None)
        if grant is None:
            raise Refused(REFUSED, "unknown or already used lane ticket")
        try:
            if not hmac.compare_digest(grant.secret, ticket[TICKET_ID_BYTES:]):
                raise Refused(REFUSED, "lane ticket does not match")
            if self.clock() > grant.expires:
                raise Refused(REFUSED, "lane ticket expired")
            if (name, offset, length) != (grant.name, grant.offset, grant.length):
                raise Refused(REFUSED, "lane ticket is for another file or range")
            if normal_ip(caller) != grant.caller:
                raise Refused(REFUSED, "lane ticket was issued to another caller")
        except Refused:
            grant.release()
            raise
        return grant

    # -- connections --------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None  # start() made it
        while not self._stopping.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                self._sweep()
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # out of file descriptors or similar: do not spin
                continue
            host = normal_ip(addr[0])
            if not self._greet(host):
                conn.close()  # this address already has its share of connections still to say hello
                continue
            if not self._connections.acquire(blocking=False):
                self._greeted(host)
                conn.close()  # more connections than transfers could use: a flood, not a client
                continue
            threading.Thread(target=self._serve, args=(conn, host), name="p2p-lane", daemon=True).start()

    def _greet(self, host: str) -> bool:
        """Count one more connection of host waiting for its hello; False when host has its share."""
        with self._lock:
            waiting = self._greeting.get(host, 0)
            if waiting >= self.hellos_per_address:
                return False
            self._greeting[host] = waiting + 1
            return True

    def _greeted(self, host: str) -> None:
        with self._lock:
            left = self._greeting[host] - 1
            if left:
                self._greeting[host] = left
            else:
                del self._greeting[host]

    def _serve(self, conn: socket.socket, host: str) -> None:
        try:
            try:
                try:
                    ticket, name, offset, length = read_hello(conn, time.monotonic() + self.hello_timeout)
                finally:
                    self._greeted(host)
                grant = self.redeem(ticket, name, offset, length, host)
            except Refused as refused:
                log.info("lane from %s refused: %s", host, refused.message)
                _reply(conn, refused.status, refused.message)
                return
            except (ProtocolError, OSError, struct.error):
                return
            try:
                self._send(conn, grant)
            finally:
                grant.release()
        finally:
            conn.close()
            self._connections.release()

    def _send(self, conn: socket.socket, grant: Grant) -> None:
        try:
            fh = self.open_file(grant.name)
        except Exception as err:  # noqa: BLE001 - the opener's refusal, told to the client
            _reply(conn, GONE, getattr(err, "detail", None) or str(err))
            return
        with fh:
            st = os.fstat(fh.fileno())
            if file_state(st) != grant.state or grant.offset + grant.length > st.st_size:
                _reply(conn, GONE, f"{grant.name} changed since the ticket was issued")
                return
            conn.settimeout(None)  # blocking: sendfile loops in the kernel
            idle = self.limits.idle_timeout
            if idle > 0:  # a backstop: one sendfile call that moves nothing for that long fails
                whole, micros = int(idle), int((idle - int(idle)) * 1e6)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, micros))
            conn.sendall(encode_reply(OK, grant.length))
            progress = self.watchdog.watch(Progress(self.limits, what=f"Lane {grant.name}"), lambda: _shut(conn))
            moved = [0]  # what _sendfile got out so far, also when it raises
            started = time.monotonic()
            try:
                self._sendfile(conn, fh.fileno(), grant.offset, grant.length, moved, progress)
                seconds = time.monotonic() - started
                amount = f"{format_size(moved[0])} in {format_seconds(seconds)} ({format_rate(moved[0], seconds)})"
                span = f"bytes {grant.offset}-{grant.offset + grant.length - 1}"
                log.info("Lane %s: %s to %s (%s)", grant.name, amount, grant.caller, span)
            except OSError as err:
                if progress.cut:  # the watchdog: the receiver fell behind the pace
                    by = f"this peer: {progress.cut}"
                elif isinstance(err, BlockingIOError):  # SO_SNDTIMEO: nothing taken for the idle limit
                    by = f"this peer: its client took nothing for {idle:g}s"
                else:  # the receiver went away (reset, closed)
                    by = f"the client: {err.strerror or err}"
                _reset_on_close(conn)
                log.info("Lane %s to %s cut by %s (%d bytes out)", grant.name, grant.caller, by, moved[0])
            finally:
                progress.release()
                self.on_sent(moved[0])

    def _sendfile(
        self, conn: socket.socket, fd: int, offset: int, length: int, moved: list[int], progress: Progress
    ) -> None:
        """Send the range block by block, each block one wait on the receiver (see the module's docstring)."""
        out = conn.fileno()
        position, end = offset, offset + length
        while position < end:
            n = min(self.block, end - position)
            if self.rate is not None:
                self.rate.consume(n)  # this peer's own rate limit: not a wait on the receiver
            progress.wait()
            block_end = position + n
            while position < block_end:
                sent = os.sendfile(out, fd, position, block_end - position)
                if sent == 0:  # the file shrank under us: the client sees a short range
                    progress.done(0)
                    return
                position += sent
                moved[0] = position - offset
            progress.done(n)
        if progress.cut:  # cut after the last block went into the socket's buffer
            raise BrokenPipeError("cut")


def _shut(conn: socket.socket) -> None:
    """Make a send blocked on conn fail at once (the watchdog's cut); the sender closes it."""
    conn.shutdown(socket.SHUT_RDWR)


def _reset_on_close(conn: socket.socket) -> None:
    """Have close() reset a cut lane: the bytes still queued for a slow reader are dropped, not
    trickled out by the kernel after the send ended (megabytes per lane, held for minutes)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reply(conn: socket.socket, status: int, message: str) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(encode_reply(status, 0, message))


def _listen(host: str, port: int = 0) -> socket.socket:
    """A listening socket on port (0: one the OS picks) of host (the gRPC server's bind address)."""
    bind_host = host.strip("[]")
    if bind_host in ("", "::", "0.0.0.0") and socket.has_dualstack_ipv6() and bind_host != "0.0.0.0":
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64)
    infos = socket.getaddrinfo(bind_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return socket.create_server(sockaddr, family=family, backlog=64)


__all__ = ["BUSY", "FAILED", "LaneServer", "Refused", "caller_host", "file_state"]
