"""The client's one backoff: growing pauses with jitter, bounded by time, errors that say so."""

from __future__ import annotations

import random

import pytest

from client.retry import Backoff, retry
from common.errors import Busy, NotFound, Unavailable
from tests.support import Clock


def test_pauses_double_up_to_the_cap_within_jitter():
    clock = Clock()
    backoff = Backoff(1000, first=0.2, cap=3.0, clock=clock, rng=random.Random(1))
    delays = [backoff.next_delay() or 0.0 for _ in range(8)]
    steps = [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True)), delays


def test_the_budget_bounds_the_time_spent_retrying():
    clock = Clock(now=0.0)
    backoff = Backoff(10, clock=clock, rng=random.Random(2))
    tries = 0

    def always_busy():
        nonlocal tries
        tries += 1
        raise Busy("peer5 is at its limit of 16 concurrent transfers; retry shortly")

    with pytest.raises(Busy) as caught:
        retry(always_busy, backoff=backoff, sleep=clock.sleep)
    assert clock.now <= 10
    assert tries == backoff.tries + 1 >= 5
    assert f"still so after {tries} tries over" in caught.value.detail
    assert caught.value.exit_code == 6  # busy after retries (docs/api.md, "Exit codes")


def test_unavailable_is_retried_and_keeps_its_exit_code():
    clock = Clock()
    answers = [Unavailable("no gRPC server answers"), Unavailable("no gRPC server answers"), "ok"]

    def flaky():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    seen = []
    assert (
        retry(flaky, backoff=Backoff(10, clock=clock), sleep=clock.sleep, on_retry=lambda e, d: seen.append(d)) == "ok"
    )
    assert len(seen) == 2

    with pytest.raises(Unavailable) as caught:
        retry(lambda: (_ for _ in ()).throw(Unavailable("down")), backoff=Backoff(1, clock=clock), sleep=clock.sleep)
    assert caught.value.exit_code == 4


def test_other_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise NotFound("no file 'x'")

    with pytest.raises(NotFound):
        retry(missing, budget=10, sleep=lambda s: None)
    assert calls == [1]


def test_a_zero_budget_tries_once_and_leaves_the_error_as_it_was():
    with pytest.raises(Busy, match=r"^full$"):
        retry(lambda: (_ for _ in ()).throw(Busy("full")), budget=0, sleep=lambda s: None)
