"""The client's side of the fast lane: present a ticket, receive a byte range into reused buffers.

The ticket comes from a peer's `OpenLane` gRPC call (client/transports.py asks for it);
this module only connects to the port it names, sends the hello and runs the receive loop
of that one connection, handing each received block to `write(position, block)` (the
scheduler's sink: it stores the block in place through PartialFile.write, journals finished
pieces and says whether it wants more). How the loop receives is this module's business
alone: nothing above it sees a socket. With `splice=True` the bytes go from the socket into
a pipe and from the pipe into the file with `os.splice`, never through Python's memory: the
blocks are then `PipedBlock`s, which PartialFile.write puts into the file itself; otherwise
(and wherever splice is not supported) `recv_into` fills one reused buffer and the blocks
are memoryviews of it. It never decides what to do about a failure: a LaneError says what
happened and whether the gRPC stream may still serve the same range; a cancel token shuts
the socket down from another thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable

from client.cancel import Cancel
from common.lane import BUSY, GONE, OK, REFUSED, ProtocolError, encode_hello, read_reply

BUFFER_SIZE = 1024 * 1024  # one recv_into or splice; measured: 256 KiB .. 4 MiB are within noise on loopback
SPLICE = hasattr(os, "splice")  # Linux
# splice answers these where one end cannot splice (a file system without splice_write, a socket
# without splice_read): the bytes then go through the buffer instead
_CANNOT_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


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
    write: Callable[[int, memoryview | PipedBlock], bool],
    *,
    connect_timeout: float = 2.0,
    stall_timeout: float = 10.0,
    buffer: bytearray | None = None,
    source_address: tuple[str, int] | None = None,
    cancel: Cancel | None = None,
    splice: bool = False,
) -> int:
    """Receive [offset, offset+length) of name over a lane; write(position, block) for each block.

    Blocks are memoryviews of one reused buffer; with splice, PipedBlocks where the system can
    splice (write must then store them with PartialFile.write; what it leaves is dropped).
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
            pipe = _Pipe.open(buf) if splice and SPLICE else None
            position = offset
            try:
                while received < length:
                    want = min(length - received, size)
                    try:
                        n = pipe.fill(sock, want) if pipe is not None else sock.recv_into(view[:want])
                    except OSError as err:
                        if pipe is not None and received == 0 and err.errno in _CANNOT_SPLICE:
                            pipe.close()  # this socket does not splice: receive into the buffer
                            pipe = None
                            continue
                        if cancel.cancelled:
                            return received
                        raise _socket_error(err, host, port, stall_timeout, received) from None
                    if n == 0:
                        if cancel.cancelled:
                            return received
                        raise LaneError("cut", f"the lane closed after {received} of {length} bytes", received)
                    received += n
                    keep = write(position, PipedBlock(pipe, 0, n) if pipe is not None else view[:n])
                    if pipe is not None:
                        pipe.drain()  # whatever write did not take (bytes another request wrote first)
                    if not keep or cancel.cancelled:
                        return received
                    position += n
                return received
            finally:
                if pipe is not None:
                    pipe.close()
    finally:
        sock.close()


class PipedBlock:
    """A lane's bytes still in the kernel (in a pipe) on their way to a file: no copy through Python.

    What the receive loop hands to write() when it splices. len() and slicing [start:stop] work
    as on a memoryview (a slice leaves out bytes); PartialFile.write calls write_into(fd,
    offset), which splices the bytes into the file at offset, once, in order.
    """

    __slots__ = ("_pipe", "_start", "_stop")

    def __init__(self, pipe: _Pipe, start: int, stop: int) -> None:
        self._pipe = pipe
        self._start = start
        self._stop = stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: slice) -> PipedBlock:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("a piped block is sliced in order")
        return PipedBlock(self._pipe, self._start + start, self._start + max(start, stop))

    def write_into(self, fd: int, offset: int) -> int:
        """Move the bytes into fd at offset (OSError as pwrite raises it); the bytes written."""
        return self._pipe.write_into(fd, offset, self._start, self._stop)


class _Pipe:
    """One lane's pipe between its socket and the file, and how much of the current block left it."""

    def __init__(self, buffer: bytearray) -> None:
        self.read_end, self.write_end = os.pipe()
        self.buffer = memoryview(buffer)  # for dropping bytes, and copying them where a file cannot splice
        self.held = 0  # bytes of the current block in the pipe
        self.taken = 0  # of which read out (into a file, or dropped)
        self.into_files = True  # False once a file would not take spliced bytes

    @classmethod
    def open(cls, buffer: bytearray) -> _Pipe:
        pipe = cls(buffer)
        with contextlib.suppress(OSError):  # 64 KiB by default; up to fs.pipe-max-size (1 MiB) unprivileged
            fcntl.fcntl(pipe.write_end, fcntl.F_SETPIPE_SZ, len(buffer))
        return pipe

    def fill(self, sock: socket.socket, n: int) -> int:
        """Splice up to n bytes from the socket into the (empty) pipe; 0 at the end of the stream."""
        self.held = self.taken = 0
        self.held = os.splice(sock.fileno(), self.write_end, n)
        return self.held

    def write_into(self, fd: int, offset: int, start: int, stop: int) -> int:
        if start < self.taken or stop > self.held:
            raise ValueError("these bytes already left the pipe")
        self._drop(start - self.taken)
        left = stop - start
        while left:
            if self.into_files:
                try:
                    n = os.splice(self.read_end, fd, left, offset_dst=offset)
                    if n <= 0:
                        raise OSError(errno.EIO, "the pipe ran dry")
                except OSError as err:
                    if err.errno not in _CANNOT_SPLICE:
                        raise
                    self.into_files = False  # this file takes no spliced bytes: copy them
                    continue
            else:
                n = os.readv(self.read_end, [self.buffer[: min(left, len(self.buffer))]])
                done = 0
                while done < n:
                    done += os.pwrite(fd, self.buffer[done:n], offset + done)
            self.taken += n
            offset += n
            left -= n
        return stop - start

    def drain(self) -> None:
        """Drop what is left of the current block."""
        self._drop(self.held - self.taken)

    def _drop(self, n: int) -> None:
        while n > 0:
            k = os.readv(self.read_end, [self.buffer[: min(n, len(self.buffer))]])
            if k <= 0:
                raise OSError(errno.EIO, "the pipe ran dry")
            self.taken += k
            n -= k

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


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
