"""The endgame: an idle holder takes the back of a span whose holder still sends, and races only a quiet one."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.options import DownloadOptions
from client.partial import InOrderHasher, PartialFile
from client.scheduler import Attempt, Holder, Scheduler, Span
from client.transports import Content
from tests.support import MiB

SIZE = 64 * MiB
RATE = 20e6  # bytes per second, both holders


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endgame(tmp_path: Path):
    """A scheduler whose every byte is in flight: holder a fetches one span with two requests, b is idle."""
    part = PartialFile(tmp_path / "f.bin", SIZE, "0" * 64, MiB)
    clock = Clock()
    options = DownloadOptions()
    a, b = (Holder.of({"name": name, "grpc_address": f"127.0.0.1:{n}"}, options) for n, name in enumerate("ab", 1))
    for holder in (a, b):
        holder.workers = 2
        holder.meter.rate = RATE
        holder.meter.gap = holder.meter.latency = 0.002
    scheduler = Scheduler(Content("f.bin", SIZE, "0" * 64), part, [a, b], options, InOrderHasher(part), clock=clock)
    near, far = Span(0, SIZE // 2), Span(SIZE // 2, SIZE)
    for span in (near, far):
        attempt = Attempt(scheduler, a, span, True, clock.now)
        attempt.last_block = clock.now
        span.attempts.append(attempt)
        scheduler._flying.append(span)
    a.requests = 2
    yield scheduler, a, b, far, clock
    part.discard()


def test_a_span_whose_holder_still_sends_is_split_not_fetched_twice(endgame):
    scheduler, a, b, far, clock = endgame
    clock.now += 0.001  # a's bytes flow
    taken = scheduler._race(b, clock.now)
    assert taken is not None and taken.attempts == [] and taken.end in (SIZE // 2, SIZE)  # a new span, for b
    kept = [s for s in scheduler._flying if s.attempts and s.end == taken.frontier]
    assert len(kept) == 1  # a stops where b starts: no byte is asked of both
    # the cut falls where both finish together: a at half its rate (two requests), b at all of its own
    mine, theirs = (taken.end - taken.frontier) / RATE, (kept[0].end - kept[0].frontier) / (RATE / 2)
    assert abs(theirs - (0.002 + mine)) < 0.01


def test_a_span_whose_holder_went_quiet_is_raced_whole(endgame):
    scheduler, a, b, far, clock = endgame
    clock.now += 3.0  # nothing from a for longer than half its silence limit
    raced = scheduler._race(b, clock.now)
    assert raced is not None and raced.attempts[0].holder is a  # a span of a's, as it is: both fetch it
    assert [(s.frontier, s.end) for s in scheduler._flying] == [(0, SIZE // 2), (SIZE // 2, SIZE)]


def test_a_holder_not_measured_yet_is_not_raced_while_its_bytes_flow(endgame):
    scheduler, a, b, far, clock = endgame
    a.meter.rate = None
    clock.now += 0.001
    assert scheduler._race(b, clock.now) is None
