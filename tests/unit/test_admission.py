"""Admission (slots and shares) and the watchdog's idle and stall limits, on a fake clock."""

from __future__ import annotations

import threading

import pytest

from common.errors import Busy
from peer_app.admission import Admission, address_of
from peer_app.pace import Limits, Progress, Watchdog
from tests.support import Clock


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:50312", "ipv4:127.0.0.1"),
        ("ipv6:[::1]:50312", "ipv6:[::1]"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_address_of_drops_the_port(peer, address):
    assert address_of(peer) == address


def test_a_full_peer_refuses_at_once_and_a_released_slot_is_reusable():
    admission = Admission(2)
    a = admission.admit("ipv4:10.0.0.1:1")
    admission.admit("ipv4:10.0.0.2:1")
    with pytest.raises(Busy, match="limit of 2 concurrent transfers"):
        admission.admit("ipv4:10.0.0.3:1", "peer5")
    a.release()
    a.release()  # twice is once
    assert admission.in_use == 1
    admission.admit("ipv4:10.0.0.3:1")
    assert admission.in_use == 2
    assert admission.refused == 1


def test_one_connection_cannot_take_every_slot():
    admission = Admission(4, per_connection=2)
    for _ in range(2):
        admission.admit("ipv4:127.0.0.1:5000")
    with pytest.raises(Busy, match="2 concurrent transfers per connection"):
        admission.admit("ipv4:127.0.0.1:5000")
    admission.admit("ipv4:127.0.0.1:5001")  # another client on the same host still gets in


def test_one_address_cannot_take_every_slot_through_many_connections():
    admission = Admission(4, per_connection=2, per_address=3)
    for port in range(3):
        admission.admit(f"ipv4:10.0.0.1:{port}")
    with pytest.raises(Busy, match="3 concurrent transfers per client address"):
        admission.admit("ipv4:10.0.0.1:9")
    ticket = admission.admit("ipv4:10.0.0.2:1")
    ticket.release()
    assert admission.in_use == 3


def test_shares_at_or_above_the_total_mean_no_share():
    admission = Admission(2, per_connection=0, per_address=5)
    admission.admit("ipv4:1.1.1.1:1")
    admission.admit("ipv4:1.1.1.1:1")
    assert admission.in_use == 2


def test_an_idle_wait_is_overdue_after_the_idle_timeout():
    clock = Clock()
    progress = Progress(Limits(idle_timeout=10, stall_timeout=0), clock)
    assert progress.overdue() is None  # not waiting: the server works on its own time
    progress.wait()
    clock.now += 9.9
    assert progress.overdue() is None
    clock.now += 0.2
    assert "waiting 10.1s on one message (limit 10s)" in (progress.overdue() or "")
    progress.done(1)
    assert progress.overdue() is None


def test_time_the_server_spends_on_its_own_does_not_count():
    clock = Clock()
    progress = Progress(Limits(idle_timeout=1, stall_timeout=2, min_rate=1000), clock)
    for _ in range(100):
        progress.wait()
        clock.now += 0.001
        progress.done(1000)
        clock.now += 5.0  # e.g. its own rate limit
    assert progress.overdue() is None


def test_a_trickling_client_runs_out_of_stall_budget():
    clock = Clock()
    progress = Progress(Limits(idle_timeout=10, stall_timeout=30, min_rate=8192), clock)
    cut_after = None
    for step in range(20):
        progress.wait()
        clock.now += 9.0  # just inside the idle limit, each time
        if progress.overdue():
            cut_after = step
            break
        progress.done(10)  # ten bytes
    assert cut_after == 3  # 30 s in hand, 9 s a message: the fourth wait runs out
    assert "under 8192 bytes/s" in (progress.overdue() or "")


def test_a_slow_but_steady_client_keeps_its_budget():
    clock = Clock()
    progress = Progress(Limits(idle_timeout=10, stall_timeout=30, min_rate=8192), clock)
    for _ in range(200):
        progress.wait()
        clock.now += 1.0
        assert progress.overdue() is None
        progress.done(16 * 1024)  # 16 KiB/s, above the minimum rate


def test_the_watchdog_cancels_overdue_calls_once_and_forgets_them():
    clock = Clock()
    dog = Watchdog(clock=clock)
    cancelled = []
    slow = Progress(Limits(idle_timeout=5, stall_timeout=0), clock, what="Upload from a")
    fast = Progress(Limits(idle_timeout=5, stall_timeout=0), clock, what="Upload from b")
    dog.watch(slow, lambda: cancelled.append("slow"))
    dog.watch(fast, lambda: cancelled.append("fast"))
    slow.wait()
    clock.now += 6
    fast.wait()
    assert [p.what for p in dog.check()] == ["Upload from a"]
    assert slow.cut and "waiting 6.0s" in slow.cut and fast.cut is None
    assert dog.check() == []
    assert cancelled == ["slow"]
    assert dog.cut == 1
    fast.release()
    assert dog.watched == 0


def test_release_gives_the_slot_back_and_the_watchdog_goes_quiet_once():
    admission = Admission(1)
    quiet = threading.Event()
    dog = Watchdog(interval=0.01, quiet_after=0.05, on_quiet=quiet.set)
    progress = Progress(Limits())
    progress.ticket = admission.admit("ipv4:127.0.0.1:1")
    dog.watch(progress, lambda: None)
    assert not quiet.wait(0.2)  # a call is still watched
    progress.release()
    progress.release()
    assert admission.in_use == 0
    assert quiet.wait(5)
