"""Liveness like a tracker: peers that stop beating expire, come back on their next beat."""

from __future__ import annotations

import pytest

from maestro_app.directory import Directory, FileEntry
from tests.support import Clock


def make_directory(path, clock) -> Directory:
    return Directory(str(path), default_interval=2.0, expire_after_beats=3.0, clock=clock)


def test_a_peer_expires_after_missed_beats_and_returns_on_its_next_beat(tmp_path):
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)
    d.register("p1", "http://p1:1", "p1:2", [FileEntry("a.txt", 1, 0.0, "")], heartbeat_interval=1.0)
    d.register("p2", "http://p2:1", "p2:2", [FileEntry("a.txt", 1, 0.0, "")])  # Maestro default: 2s
    clock.now += 3.1  # p1 missed three beats, p2 not yet two
    assert [p["name"] for p in d.locate("a.txt")] == ["p2"]
    assert {p["name"]: p["alive"] for p in d.peers()} == {"p1": False, "p2": True}
    assert d.counts() == {"peers": 2, "alive": 1, "files": 2}
    d.heartbeat("p1")
    assert sorted(p["name"] for p in d.locate("a.txt")) == ["p1", "p2"]


def test_a_restarted_directory_loses_nothing(tmp_path):
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)
    d.register("p1", "http://p1:1", "p1:2", [FileEntry("a.txt", 1, 0.0, "")])
    again = make_directory(tmp_path / "m.sqlite3", clock)
    assert [p["name"] for p in again.locate("a.txt")] == ["p1"]


def alive(d: Directory) -> dict[str, bool]:
    return {p["name"]: p["alive"] for p in d.peers()}


def test_the_maestros_downtime_is_not_counted_as_missed_beats(tmp_path):
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)  # window: 3 beats of 2 s = 6 s
    d.started()
    d.register("p1", "http://p1:1", "p1:2", [FileEntry("a.txt", 1, 0.0, "")])
    clock.now += 5.0
    d.tick()  # the Maestro's last sign of life; p1 beat 5 s ago: alive, 1 s left
    clock.now += 20.0  # down for 20 s (kill -9), then it starts again
    again = make_directory(tmp_path / "m.sqlite3", clock)
    assert again.started() == 20.0
    assert alive(again) == {"p1": True}
    assert [p["name"] for p in again.locate("a.txt")] == ["p1"]
    clock.now += 5.9  # a full window after the start, p1 still has not beaten: it is dead then, not before
    assert alive(again) == {"p1": True}
    clock.now += 0.2
    assert alive(again) == {"p1": False}
    assert again.locate("a.txt") == []


def test_a_storm_of_quick_restarts_never_adds_up_against_the_peers(tmp_path):
    """Each restart's downtime was counted only past 1.5 s: five 1.2 s restarts expired a 0.5 s-beat peer."""
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)
    d.started()
    d.register("p1", "http://p1:1", "p1:2", [FileEntry("a.txt", 1, 0.0, "")], heartbeat_interval=0.5)  # 1.5 s
    for restart in range(5):
        clock.now += 0.1  # up for a moment (one tick), then killed
        d.tick()
        clock.now += 1.2  # a restart: a process start, the app, the first answer
        d = make_directory(tmp_path / "m.sqlite3", clock)
        assert d.started() == pytest.approx(1.2)
        assert alive(d) == {"p1": True}, restart


def test_a_peer_dead_before_the_maestro_went_down_stays_dead_after_it_restarts(tmp_path):
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)
    d.register("gone", "http://g:1", "g:2", [FileEntry("a.txt", 1, 0.0, "")])
    d.register("live", "http://l:1", "l:2", [FileEntry("a.txt", 1, 0.0, "")])
    clock.now += 10.0
    d.heartbeat("live")
    d.tick()  # "gone" missed its beats 4 s ago
    clock.now += 30.0
    again = make_directory(tmp_path / "m.sqlite3", clock)
    again.started()
    assert alive(again) == {"gone": False, "live": True}
    assert [p["name"] for p in again.locate("a.txt")] == ["live"]


def test_a_worker_starting_beside_a_running_one_changes_nobodys_window(tmp_path):
    clock = Clock()
    d = make_directory(tmp_path / "m.sqlite3", clock)
    d.started()
    d.register("p1", "http://p1:1", "p1:2", [])
    clock.now += 5.5
    d.tick()
    clock.now += 0.2  # the other worker ticked 0.2 s ago (it ticks every 0.25 s): the Maestro was never down
    assert make_directory(tmp_path / "m.sqlite3", clock).started() == 0.0
    clock.now += 0.4
    assert alive(d) == {"p1": False}  # 6.1 s since its beat, window 6 s


def test_a_directory_from_before_the_restart_rule_keeps_its_peers(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the peers table as it was before counted_from
        conn.execute(
            "CREATE TABLE peers (name TEXT PRIMARY KEY, rest_url TEXT NOT NULL, grpc_address TEXT NOT NULL,"
            " heartbeat_interval REAL NOT NULL, registered_at REAL NOT NULL, last_seen REAL NOT NULL)"
        )
        conn.execute("INSERT INTO peers VALUES ('p1', 'http://p1:1', 'p1:2', 2.0, 990.0, 999.0)")
    d = make_directory(path, Clock())
    assert alive(d) == {"p1": True}
