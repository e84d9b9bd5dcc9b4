"""The client's side of the fast lane: present a ticket, receive a byte range into reused buffers.

The ticket comes from a peer's `OpenLane` gRPC call; this module only connects to
the port it names, sends the hello and hands each received block to `write`
(the download pwrites it in place and journals finished pieces). It never
decides what to do about a failure: a LaneError says what happened and whether
the gRPC stream may still serve the same range.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

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

    @property
    def stream_may_serve(self) -> bool:
        """Whether the same holder's gRPC stream is worth trying for the rest."""
        return self.kind in ("unreachable", "refused", "cut", "protocol")


def fetch(
    host: str,
    port: int,
    ticket: bytes,
    name: str,
    offset: int,
    length: int,
    write: Callable[[int, memoryview], None],
    *,
    connect_timeout: float = 2.0,
    stall_timeout: float = 10.0,
    buffer: bytearray | None = None,
    source_address: tuple[str, int] | None = None,
) -> int:
    """Receive [offset, offset+length) of name over a lane; write(position, block) for each block.

    Returns length; raises LaneError (with the bytes already written) otherwise.
    """
    try:
        sock = socket.create_connection(
            (host.strip("[]"), port), timeout=connect_timeout, source_address=source_address
        )
    except OSError as err:
        raise LaneError("unreachable", f"cannot open a lane to {host}:{port}: {_reason(err)}") from None
    received = 0
    try:
        sock.settimeout(None)  # blocking recv; SO_RCVTIMEO is the stall deadline (no poll per block)
        seconds = int(stall_timeout)
        micros = int((stall_timeout - seconds) * 1e6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
        sock.sendall(encode_hello(ticket, name, offset, length))
        status, announced, message = read_reply(sock)
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
            n = sock.recv_into(view if want >= size else view[:want])
            if n == 0:
                raise LaneError("cut", f"the lane closed after {received} of {length} bytes", received)
            write(position, view[:n])
            position += n
            received += n
        return received
    except BlockingIOError:
        raise LaneError("stalled", f"nothing arrived on the lane for {stall_timeout:g}s", received) from None
    except ProtocolError as err:
        kind = "cut" if received or "closed" in str(err) else "protocol"
        raise LaneError(kind, f"lane to {host}:{port}: {err}", received) from None
    except (ConnectionError, TimeoutError) as err:
        raise LaneError("cut", f"lane to {host}:{port} cut: {_reason(err)}", received) from None
    finally:
        sock.close()


def _reason(err: OSError) -> str:
    if isinstance(err, TimeoutError) or "timed out" in str(err):
        return "timed out"
    return err.strerror or type(err).__name__
