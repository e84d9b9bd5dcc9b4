"""The scrub: a peer hashes its shared files again, slowly, for ever, to catch bytes that changed unseen.

A file's status (size, mtime, inode, ctime) tells the index when a file was written; a failing
disk or a bit flipped under the file system leaves no such trace, and the cached digest would be
advertised for ever. The scrub reads every shared file again, the longest unchecked first, at
most settings.scrub_rate bytes per second (each file counts as at least MIN_FILE_COST, so a
folder of small files costs few opens), and hands each file to SharedIndex.verify: a file whose
bytes changed is withheld or takes its new digest there, and on_change (the presence agent's
register_now) tells the Maestro at once. It runs in one process per peer, the gRPC server's,
beside the heartbeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from peer_app.index import Check, SharedIndex
from peer_app.storage import RateLimiter

log = logging.getLogger(__name__)

MIN_FILE_COST = 1024 * 1024  # bytes of the rate each file costs at least (its open, stat and row)
IDLE_WAIT = 5.0  # seconds between looks at an empty folder


class Pace:
    """Re-hashing at most `rate` bytes per second (0: unlimited), each file counting as at least
    MIN_FILE_COST: the scrub's pace, and POST /refresh's (peer_app/views.py)."""

    def __init__(
        self, rate: int, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] | None = None
    ) -> None:
        # time.sleep looked up when it sleeps: gevent's once the REST worker patched it
        self.limiter = RateLimiter(rate, clock=clock, sleep=sleep or (lambda seconds: time.sleep(seconds)))
        self.bytes_read = 0

    def file(self, size: int) -> None:
        """Account for one file of size bytes besides its bytes (its open, stat and row)."""
        self.limiter.consume(max(0, MIN_FILE_COST - size))

    def __call__(self, n: int) -> None:
        """Account for n bytes read (the pace SharedIndex.verify calls after each block)."""
        self.bytes_read += n
        self.limiter.consume(n)


class Scrub:
    """Passes over one shared folder at a bounded read rate until stopped."""

    def __init__(
        self,
        index: SharedIndex,
        rate: int,
        on_change: Callable[[Check], object],
        stop: threading.Event | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.index = index
        self.on_change = on_change
        self.stop = stop or threading.Event()
        self.pace = Pace(rate, clock=clock, sleep=sleep or self.stop.wait)
        self.passes = 0

    @property
    def bytes_read(self) -> int:
        return self.pace.bytes_read

    def run_pass(self) -> list[Check]:
        """Verify every shared file once, the longest unchecked first; return those whose bytes changed."""
        changed = []
        for name, size in self.index.scrub_order():
            if self.stop.is_set():
                break
            self.pace.file(size)
            try:
                result = self.index.verify(name, pace=self.pace)
            except OSError as err:  # a read error: the disk itself is failing; say so, go on with the rest
                log.error("the scrub cannot read %s: %s", name, err.strerror or err)
                continue
            if result is not None and result.changed:
                changed.append(result)
                self.on_change(result)
        self.passes += 1
        return changed

    def run(self) -> None:
        """Pass after pass until stop is set."""
        while not self.stop.is_set():
            if not self.index.scrub_order():
                self.stop.wait(IDLE_WAIT)
                continue
            self.run_pass()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="scrub", daemon=True)
        thread.start()
        return thread
