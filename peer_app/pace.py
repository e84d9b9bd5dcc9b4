"""The pace every transfer's client must keep, whatever path the bytes take, and its watchdog.

A transfer waits on its client: for a gRPC stream the client sends, the wait for its next
message; for a stream it reads, the wait for the flow-control window to take the next message;
for a fast-lane send (peer_app/lane.py), the wait for the socket to take the next block. Only
that time counts, and two limits apply (the settings transfer_idle_timeout,
transfer_stall_timeout and transfer_min_rate, read in one place: limits_of):

- idle: one such wait may last at most `idle_timeout` seconds (an Upload that sends nothing,
  a Download whose client stopped reading or was SIGSTOPped);
- stall: a transfer earns `1 / min_rate` seconds of waiting per byte it moves, up to
  `stall_timeout` seconds in hand, and starts with that much; a client that trickles (a few
  bytes just inside the idle limit, again and again) runs out and is cut. So a transfer lives
  as long as its client keeps pace, and no longer.

The thread that serves a transfer reports its waits on a Progress; one Watchdog thread cuts
the transfers that are overdue, through the cancel callable each registered (a gRPC call's
context.cancel(), a lane's socket shutdown): the blocked read or send fails, the serving
thread unwinds and gives its transfer slot back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from common.config import Settings

log = logging.getLogger(__name__)


class Slot(Protocol):
    """What holds a transfer slot (peer_app.admission.Ticket): give it back once."""

    def release(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """How long a transfer's client may keep it waiting (see the module's docstring)."""

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
        self.ticket: Slot | None = None  # the transfer slot the call holds, given back by release()
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


def limits_of(settings: Settings) -> Limits:
    """The pace a peer's transfers must keep, from its settings (streams and lane alike)."""
    return Limits(settings.transfer_idle_timeout, settings.transfer_stall_timeout, settings.transfer_min_rate)
