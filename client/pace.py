"""How a download judges a holder: by what it measured of that holder, never by a fixed guess.

A `Meter` per holder keeps its delivery rate (sampled every watchdog tick while the holder
had a request in flight, smoothed), its usual gap between two blocks of one request and
its usual wait for a request's first byte. From these, pure functions decide:

- how much to ask of it at once (`request_size`): about TARGET_SECONDS of its own rate in
  flight, split over its workers, never more than its rate-proportional share of what is
  left (so every holder finishes at about the same time), in multiples of BLOCK;
- when it has lost its pace (`Meter.silence_limit`): no byte for PACE_MULTIPLE of its usual
  gaps, with a floor of PACE_FLOOR seconds, and never longer than the user's stall timeout;
- how many lane requests to keep in flight at once (`lane_depth`): one at a holder that
  answers within PIPELINE_LATENCY and delivers at least FAST_RATE, else one per worker;
- whether an idle holder should take over (part of) a request still in flight elsewhere
  (`race_gain`): only when it would finish that range clearly sooner than the holder now
  fetching it.

libtorrent sizes its request queues from each peer's measured rate and runs an endgame
for the last pieces; aria2 shrinks its segments near the end: the same ideas, measured here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KiB, MiB = 1024, 1024 * 1024
TARGET_SECONDS = 1.5  # each holder keeps about this much of its own measured rate in flight
FIRST_REQUEST = 1 * MiB  # asked of a holder before its rate is known; doubles with each request it completes
MIN_REQUEST = 256 * KiB  # the smallest request (a slow holder's)
MAX_REQUEST = 128 * MiB  # the largest (a fast holder's, early in a large file)
BLOCK = 64 * KiB  # requests start and end on multiples of this (or at the end of the file)
PACE_MULTIPLE = 4.0  # a holder silent for this many of its usual gaps has lost its pace ...
PACE_FLOOR = 1.0  # ... but never in less than this many seconds
RATE_WEIGHT = 0.3  # weight of the newest tick in the smoothed rate
GAP_WEIGHT = 0.1  # weight of the newest gap in the usual gap
RACE_FACTOR = 1.5  # duplicate a request only if the idle holder would finish it this much sooner ...
RACE_MARGIN = 0.05  # ... plus this many seconds
# A second lane request in flight at one holder hides the next request's set-up (OpenLane, connect,
# hello) behind the current one, and keeps a slow holder's share moving while one request waits.
# It does not pay at a holder both near and fast: there two receive loops into one file cost more
# than they hide (two loops on two cores, each pwrite waiting for the other's hold on the file;
# bench.transfer, 2 GiB on loopback: client CPU 1.09 -> 0.85 s/GiB with one; docs/performance.md).
PIPELINE_LATENCY = 0.01 * TARGET_SECONDS  # near: a request's first byte comes sooner than this ...
FAST_RATE = 100e6  # ... and fast: bytes per second at least this (or not measured yet)


@dataclass
class Meter:
    """What one holder delivered and how steadily; updated by the download's threads."""

    rate: float | None = None  # bytes per second while busy, smoothed; None until measured
    gap: float | None = None  # usual seconds between two blocks of one request
    latency: float | None = None  # usual seconds from a request to its first byte
    received: int = 0  # bytes received from it (duplicates included)
    probe: int = FIRST_REQUEST  # the next request's size while the rate is unknown
    _ticked: int = 0  # received at the last tick
    busy_since: float | None = None  # when its requests in flight went from none to some

    def block(self, seconds_since_last: float | None, n: int) -> None:
        """n more bytes; seconds_since_last is the gap since this request's previous block (None: its first)."""
        self.received += n
        if seconds_since_last is not None:
            self.gap = _smooth(self.gap, seconds_since_last, GAP_WEIGHT)

    def first_byte(self, seconds: float) -> None:
        self.latency = _smooth(self.latency, seconds, GAP_WEIGHT * 2)

    def tick(self, now: float, seconds: float) -> None:
        """One watchdog tick of `seconds`: a rate sample if the holder was busy all along."""
        delta, self._ticked = self.received - self._ticked, self.received
        if self.busy_since is not None and self.busy_since <= now - seconds and seconds > 0:
            self.rate = _smooth(self.rate, delta / seconds, RATE_WEIGHT)

    def finished(self, size: int, seconds: float) -> None:
        """A request of size bytes completed in seconds: grow the probe; a first rate if none was sampled."""
        self.probe = min(MAX_REQUEST, self.probe * 2)
        if self.rate is None and seconds > 0:
            self.rate = size / seconds

    def silence_limit(self, stall_timeout: float, started: bool) -> float:
        """Seconds without a byte after which a request of this holder has lost its pace."""
        usual = self.gap if started else self.latency
        if usual is None:
            return stall_timeout
        return min(stall_timeout, max(PACE_FLOOR, PACE_MULTIPLE * usual))

    def eta(self, remaining: int, requests: int) -> float:
        """Seconds this holder needs for remaining bytes with `requests` requests sharing its rate."""
        if not self.rate:
            return math.inf
        return remaining / (self.rate / max(1, requests))


def _smooth(old: float | None, new: float, weight: float) -> float:
    return new if old is None else old + weight * (new - old)


def lane_depth(meter: Meter, workers: int) -> int:
    """Lane requests to keep in flight at a holder with this many workers: one once it proved near and fast."""
    near = meter.latency is not None and meter.latency < PIPELINE_LATENCY
    fast = meter.rate is None or meter.rate >= FAST_RATE
    return 1 if near and fast else workers


def request_size(meter: Meter, workers: int, share: float) -> int:
    """Bytes to ask of a holder now: ~TARGET_SECONDS of its rate over its workers, at most its share of what is left."""
    wanted = meter.probe if meter.rate is None else meter.rate * TARGET_SECONDS / max(1, workers)
    wanted = min(wanted, share, MAX_REQUEST)
    return max(MIN_REQUEST, int(wanted) // BLOCK * BLOCK)


def share_of(meter: Meter, meters: list[Meter], workers: int, left: int) -> float:
    """This holder's part of `left` unassigned bytes: in proportion to its rate, split over its workers."""
    rates = [m.rate for m in meters if m.rate]
    if meter.rate and rates:
        return left * meter.rate / sum(rates) / max(1, workers)
    return left / max(1, len(meters) * workers)


def race_gain(my_eta: float, their_eta: float) -> float:
    """Seconds saved if an idle holder also fetches a range in flight at another; <= 0: not worth the bytes.

    their_eta is infinite when the holder fetching it has no measured rate or has gone quiet.
    """
    if math.isinf(their_eta):
        return math.inf
    if their_eta <= RACE_FACTOR * my_eta + RACE_MARGIN:
        return 0.0
    return their_eta - my_eta
