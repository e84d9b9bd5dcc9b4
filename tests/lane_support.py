"""A fast-lane receiver that falls behind: it takes a few bytes now and then, as an attacker would."""

from __future__ import annotations

import socket
import threading
import time

from common.lane import OK, encode_hello, read_reply


class SlowReader:
    """Redeems a lane ticket, then takes `step` bytes every `every` seconds on a small receive buffer.

    Runs on a thread of its own; `ended` is set (and `ended_after` the seconds it was served)
    when the peer closes or resets the lane. stop() ends it from the test's side.
    """

    def __init__(self, host: str, ticket, name: str, *, step: int = 16 * 1024, every: float = 1.0) -> None:
        self.address = (host, ticket.port)
        self.hello = encode_hello(ticket.ticket, name, ticket.offset, ticket.length)
        self.step = step
        self.every = every
        self.received = 0
        self.status: int | None = None
        self.ended = threading.Event()
        self.ended_after: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-lane-reader", daemon=True)

    def start(self) -> SlowReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        started = time.monotonic()
        try:
            sock.settimeout(30)  # the peer always has bytes for it, or ends the lane
            sock.connect(self.address)
            sock.sendall(self.hello)
            self.status, _, _ = read_reply(sock)
            if self.status != OK:
                return
            while not self._stop.is_set():
                want = self.step
                while want:
                    data = sock.recv(want)
                    if not data:
                        return  # the peer closed the lane
                    self.received += len(data)
                    want -= len(data)
                self._stop.wait(self.every)  # the attacker's pace
        except OSError:
            return  # reset by the peer (or no lane at all)
        finally:
            sock.close()
            if not self._stop.is_set():
                self.ended_after = time.monotonic() - started
                self.ended.set()
