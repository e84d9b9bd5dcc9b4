"""The client's side of the fast lane: present a ticket, receive a byte range into reused buffers.

The ticket comes from a peer's `OpenLane` gRPC call (client/transports.py asks for it);
this module only connects to the port it names, sends the hello and runs the receive loop
of that one connection, handing each received block to `write(position, block)` (the
scheduler's sink: it pwrites in place, journals finished pieces and says whether it wants
more). How the loop receives (recv_into a reused buffer today) is this module's business
alone: nothing above it sees a socket. It never decides what to do about a failure: a
LaneError says what happened and whether the gRPC stream may still serve the same range;
a cancel token shuts the socket down from another thread.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from client.cancel import Cancel
from common.lane import BUSY, GONE, OK, REFUSED, ProtocolError, encode_hello, read_reply

BUFFER_SIZE = 1024 * 1024  # one recv_into; measured: 256 KiB .. 4 MiB are within noise on loopback


class LaneError(Exception):
    """A lane that did not deliver its whole range.

    kind is one of: "unreachable" (no connection: a firewall, a closed port),
    "refused" (the peer rejected the ticket), "busy", "gone" (the file is missing
    or changed), "cut" (the connection ended early), "stalled" (nothing arrived
    for stall_timeout), "protocol" (the other end does not speak the lane).
    received counts the bytes already handed to write.
    """

    def __init__(self, kind: str, detail: str, received: int = 0) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.received = received


def fetch(
    host: str,
    port: int,
    ticket: bytes,
    name: str,
    offset: int,
    length: int,
    write: Callable[[int, memoryview], bool],
    *,
    connect_timeout: float = 2.0,
    stall_timeout: float = 10.0,
    buffer: bytearray | None = None,
    source_address: tuple[str, int] | None = None,
    cancel: Cancel | None = None,
) -> int:
    """Receive [offset, offset+length) of name over a lane; write(position, block) for each block.

    Returns the bytes handed to write: length, or fewer when write answered False (the rest is
    no longer wanted) or cancel was set (the socket is shut down at once). Raises LaneError (with
    the bytes already written) when the lane itself failed; whatever write raises (a full local
    disk) passes through untouched.
    """
    cancel = cancel or Cancel()
    sock = _connect(host, port, connect_timeout, source_address, cancel)
    if sock is None:
        return 0
    received = 0
    try:
        with cancel.hook(lambda: sock.shutdown(socket.SHUT_RDWR)):
            try:
                sock.settimeout(None)  # blocking recv; SO_RCVTIMEO is the stall deadline (no poll per block)
                seconds = int(stall_timeout)
                micros = int((stall_timeout - seconds) * 1e6)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
                sock.sendall(encode_hello(ticket, name, offset, length))
                status, announced, message = read_reply(sock)
            except ProtocolError as err:
                if cancel.cancelled:
                    return 0
                kind = "cut" if "closed" in str(err) else "protocol"
                raise LaneError(kind, f"lane to {host}:{port}: {err}") from None
            except OSError as err:
                if cancel.cancelled:
                    return 0
                raise _socket_error(err, host, port, stall_timeout, 0) from None
            if status != OK:
                kind = {REFUSED: "refused", BUSY: "busy", GONE: "gone"}.get(status, "cut")
                raise LaneError(kind, message or f"the peer would not send {name} over its lane")
            if announced != length:
                raise LaneError("protocol", f"the peer announced {announced} bytes, {length} were asked")
            buf = buffer if buffer is not None else bytearray(BUFFER_SIZE)
            view = memoryview(buf)
            size = len(buf)
            position = offset
            while received < length:
                want = length - received
                try:
                    n = sock.recv_into(view if want >= size else view[:want])
                except OSError as err:
                    if cancel.cancelled:
                        return received
                    raise _socket_error(err, host, port, stall_timeout, received) from None
                if n == 0:
                    if cancel.cancelled:
                        return received
                    raise LaneError("cut", f"the lane closed after {received} of {length} bytes", received)
                received += n
                if not write(position, view[:n]) or cancel.cancelled:
                    return received
                position += n
            return received
    finally:
        sock.close()


def _connect(
    host: str, port: int, timeout: float, source_address: tuple[str, int] | None, cancel: Cancel
) -> socket.socket | None:
    """A connected socket (None when cancelled meanwhile); LaneError "unreachable" otherwise."""
    address = (host.strip("[]"), port)
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise LaneError("unreachable", f"cannot open a lane to {host}:{port}: {_reason(err)}") from None
    try:
        sock.settimeout(timeout)
        if source_address is not None:
            sock.bind(source_address)
        with cancel.hook(lambda: sock.shutdown(socket.SHUT_RDWR)):
            if cancel.cancelled:
                sock.close()
                return None
            sock.connect(sockaddr)
        return sock
    except OSError as err:
        sock.close()
        if cancel.cancelled:
            return None
        raise LaneError("unreachable", f"cannot open a lane to {host}:{port}: {_reason(err)}") from None


def _socket_error(err: OSError, host: str, port: int, stall_timeout: float, received: int) -> LaneError:
    """What a failed socket call on an open lane means: a stall (the receive deadline) or a cut."""
    if isinstance(err, BlockingIOError):  # SO_RCVTIMEO passed: nothing arrived for stall_timeout
        return LaneError("stalled", f"nothing arrived on the lane for {stall_timeout:g}s", received)
    return LaneError("cut", f"lane to {host}:{port} cut: {_reason(err)}", received)


def _reason(err: OSError) -> str:
    if isinstance(err, TimeoutError) or "timed out" in str(err):
        return "timed out"
    return (err.strerror or type(err).__name__).lower()
