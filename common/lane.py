"""The fast lane's wire format, shared by the peer that sends and the client that receives.

A client asks a peer over gRPC (`OpenLane`) for a one-time ticket to a byte range
of a file, connects to the TCP port the ticket names, and sends one hello:

    magic "P2PL" | version u8 | flags u8 | name length u16 | ticket (32 bytes)
    | offset u64 | length u64 | name (UTF-8)

The peer answers with one reply header, then (status OK) exactly `length` bytes
of the file, straight from the page cache with sendfile, and closes:

    magic "P2PL" | status u8 | reserved u8 | message length u16 | length u64 | message (UTF-8)

All integers are big-endian. Nothing else travels on a lane: the range, the file
and who may ask were settled by the gRPC call, and the ticket proves it.
"""

from __future__ import annotations

import socket
import struct
import time

MAGIC = b"P2PL"
VERSION = 1
TICKET_BYTES = 32  # 16 bytes that name the grant, 16 secret bytes that prove it
TICKET_ID_BYTES = 16
MAX_NAME_BYTES = 1024
MAX_MESSAGE_BYTES = 1024

_HELLO = struct.Struct(">4sBBH32sQQ")
_REPLY = struct.Struct(">4sBBHQ")
HELLO_SIZE = _HELLO.size
REPLY_SIZE = _REPLY.size

# Reply statuses. The client maps each to what it does next.
OK = 0
REFUSED = 1  # no such ticket, used, expired, for another file, range or caller: use the stream instead
BUSY = 2  # the peer is at its transfer limit
GONE = 3  # the file is missing or changed since the ticket was issued
FAILED = 4  # anything else on the peer's side
STATUS_NAMES = {OK: "ok", REFUSED: "refused", BUSY: "busy", GONE: "gone", FAILED: "failed"}


class ProtocolError(Exception):
    """The other side spoke something that is not the lane protocol (or hung up mid-header)."""


def encode_hello(ticket: bytes, name: str, offset: int, length: int) -> bytes:
    raw_name = name.encode("utf-8")
    if len(ticket) != TICKET_BYTES:
        raise ValueError(f"a lane ticket has {TICKET_BYTES} bytes, not {len(ticket)}")
    if len(raw_name) > MAX_NAME_BYTES:
        raise ValueError("file name too long for a lane hello")
    return _HELLO.pack(MAGIC, VERSION, 0, len(raw_name), ticket, offset, length) + raw_name


def read_hello(sock: socket.socket, deadline: float | None = None) -> tuple[bytes, str, int, int]:
    """(ticket, name, offset, length) from a client's hello; ProtocolError on anything else.

    deadline (time.monotonic()) bounds the whole hello, not each read: a client that trickles
    one byte at a time gets TimeoutError when it passes.
    """
    magic, version, _flags, name_len, ticket, offset, length = _HELLO.unpack(read_exact(sock, HELLO_SIZE, deadline))
    if magic != MAGIC or version != VERSION:
        raise ProtocolError("not a p2pnet lane hello")
    if name_len > MAX_NAME_BYTES:
        raise ProtocolError("file name too long")
    try:
        name = read_exact(sock, name_len, deadline).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("file name is not UTF-8") from None
    return ticket, name, offset, length


def encode_reply(status: int, length: int = 0, message: str = "") -> bytes:
    raw = message.encode("utf-8")[:MAX_MESSAGE_BYTES]
    return _REPLY.pack(MAGIC, status, 0, len(raw), length) + raw


def read_reply(sock: socket.socket) -> tuple[int, int, str]:
    """(status, length, message) from a peer's reply header; ProtocolError on anything else."""
    magic, status, _reserved, message_len, length = _REPLY.unpack(read_exact(sock, REPLY_SIZE))
    if magic != MAGIC or status not in STATUS_NAMES or message_len > MAX_MESSAGE_BYTES:
        raise ProtocolError("not a p2pnet lane reply")
    message = read_exact(sock, message_len).decode("utf-8", errors="replace")
    return status, length, message


def read_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Exactly n bytes (small headers only); ProtocolError if the connection ends first.

    With a deadline (time.monotonic()), each read waits only for what is left of it.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{got} of {n} header bytes before the deadline")
            sock.settimeout(left)
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ProtocolError(f"connection closed after {got} of {n} header bytes")
        got += k
    return bytes(buf)
