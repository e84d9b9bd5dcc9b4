"""Liveness like a tracker: peers that stop beating expire, come back on their next beat."""

from __future__ import annotations

from maestro_app.directory import Directory, FileEntry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
