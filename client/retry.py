"""Retrying busy and unavailable peers: the one backoff every client command uses.

A peer at its transfer limit answers Busy at once (it never queues a call), and a peer
that is restarting answers Unavailable; both usually pass within seconds. The client
tries again after a pause that doubles each time (with jitter, so many clients that were
refused together do not come back together), until a time budget is spent. Then the last
error stands, saying how long it was retried: Busy exits 6 ("busy after retries") and
Unavailable exits 4 (docs/api.md, "Exit codes").
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from common.errors import Busy, P2PError, Unavailable

RETRY_FOR = 30.0  # seconds a command keeps retrying busy or unavailable peers
RETRY_ON: tuple[type[P2PError], ...] = (Busy, Unavailable)

T = TypeVar("T")


class Backoff:
    """Pauses of first, first*2, ... up to cap seconds (each drawn in [half, whole]) within a budget."""

    def __init__(
        self,
        budget: float = RETRY_FOR,
        *,
        first: float = 0.2,
        cap: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.budget = budget
        self.first = first
        self.cap = cap
        self.clock = clock
        self.rng = rng or random.Random()
        self.started = clock()
        self.deadline = self.started + budget
        self.tries = 0

    def next_delay(self) -> float | None:
        """Seconds to pause before the next try; None once the budget would be overrun."""
        step = min(self.cap, self.first * 2 ** min(self.tries, 30))
        delay = self.rng.uniform(step / 2, step)
        if self.clock() + delay > self.deadline:
            return None
        self.tries += 1
        return delay

    def pause(self, stop: threading.Event | None = None) -> bool:
        """Sleep the next delay (cut short when stop is set); False when the budget is spent or stopped."""
        delay = self.next_delay()
        if delay is None:
            return False
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)

    def exhausted(self, err: P2PError) -> P2PError:
        """err, saying how long it was retried (same class, so the same exit code)."""
        if not self.tries:
            return err
        spent = self.clock() - self.started
        return type(err)(f"{err.detail} (still so after {self.tries + 1} tries over {spent:.0f}s)")


def retry(
    fn: Callable[[], T],
    *,
    budget: float = RETRY_FOR,
    retry_on: tuple[type[P2PError], ...] = RETRY_ON,
    on_retry: Callable[[P2PError, float], None] | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """fn(), tried again after a growing pause while it raises one of retry_on, until budget is spent."""
    backoff = backoff or Backoff(budget)
    while True:
        try:
            return fn()
        except retry_on as err:
            delay = backoff.next_delay()
            if delay is None:
                raise backoff.exhausted(err) from None
            if on_retry is not None:
                on_retry(err, delay)
            sleep(delay)
