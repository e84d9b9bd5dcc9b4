"""The Maestro's directory: registration, liveness and durability, without HTTP."""

from __future__ import annotations

import pytest

from common.errors import BadRequest, NotFound
from maestro_app.directory import Directory, FileEntry

SHA = "a" * 64


def files(*names: str) -> list[FileEntry]:
    return [FileEntry(n, 10, 1.0, SHA) for n in names]


@pytest.fixture
def directory(tmp_path, clock):
    return Directory(str(tmp_path / "m.sqlite3"), default_interval=1.0, expire_after_beats=3, clock=clock)


def test_register_replaces_the_whole_file_list(directory):
    directory.register("peer1", "http://h:1", "h:2", files("a.txt", "b.txt"))
    directory.register("peer1", "http://h:1", "h:2", files("c.txt"))
    assert directory.locate("a.txt") == []
    assert [p["name"] for p in directory.locate("c.txt")] == ["peer1"]


def test_silent_peer_is_left_out_of_locate_and_back_on_its_next_beat(directory, clock):
    directory.register("peer1", "http://h:1", "h:2", files("a.txt"))
    clock.now += 3.5
    assert directory.locate("a.txt") == []
    assert directory.peers()[0]["alive"] is False
    directory.heartbeat("peer1")
    assert [p["name"] for p in directory.locate("a.txt")] == ["peer1"]


def test_peer_announcing_a_longer_interval_expires_later(directory, clock):
    directory.register("slow", "http://h:1", "h:2", files("a.txt"), heartbeat_interval=10.0)
    clock.now += 25
    assert directory.locate("a.txt")
    clock.now += 10
    assert directory.locate("a.txt") == []


def test_heartbeat_of_unknown_peer_is_not_found(directory):
    with pytest.raises(NotFound):
        directory.heartbeat("ghost")


def test_directory_survives_reopening(tmp_path, clock):
    path = str(tmp_path / "m.sqlite3")
    Directory(path, default_interval=1, expire_after_beats=3, clock=clock).register(
        "peer1", "http://h:1", "h:2", files("a.txt")
    )
    again = Directory(path, default_interval=1, expire_after_beats=3, clock=clock)
    assert [p["name"] for p in again.locate("a.txt")] == ["peer1"]


def test_directory_lists_every_holder(directory):
    directory.register("peer1", "http://h:1", "h:2", files("a.txt"))
    directory.register("peer2", "http://h:3", "h:4", files("a.txt", "b.txt"))
    listing = {f["name"]: [p["name"] for p in f["peers"]] for f in directory.directory()["files"]}
    assert listing == {"a.txt": ["peer1", "peer2"], "b.txt": ["peer2"]}
    assert directory.counts() == {"peers": 2, "alive": 2, "files": 3}


@pytest.mark.parametrize("name", ["Peer1", "", "a/b", "x" * 65], ids=["upper", "empty", "slash", "long"])
def test_bad_peer_names_are_refused(directory, name):
    with pytest.raises(BadRequest):
        directory.register(name, "http://h:1", "h:2", [])


GOOD = {"name": "ok", "size": 1, "mtime": 1.7e9, "sha256": "a" * 64}


@pytest.mark.parametrize(
    "raw",
    [
        {**GOOD, "name": "../x"},
        {**GOOD, "size": -1},
        {**GOOD, "size": "1"},
        {**GOOD, "sha256": "xyz"},
        {**GOOD, "mtime": "yesterday"},
        "not-an-object",
        {**GOOD, "size": 2**70},
        {**GOOD, "size": 2**53},
        {**GOOD, "size": True},
        {**GOOD, "mtime": float("nan")},
        {**GOOD, "mtime": float("inf")},
        {**GOOD, "mtime": 1e300},
        {**GOOD, "sha256": ""},
        {key: value for key, value in GOOD.items() if key != "sha256"},
        {**GOOD, "name": "a\u202etxt.exe"},
        {**GOOD, "name": "x."},
    ],
    ids=[
        "escape",
        "negative-size",
        "string-size",
        "bad-sha",
        "bad-mtime",
        "not-object",
        "size-2^70",
        "size-2^53",
        "size-bool",
        "mtime-nan",
        "mtime-inf",
        "mtime-1e300",
        "empty-sha",
        "no-sha",
        "rtlo-name",
        "trailing-dot",
    ],
)
def test_malformed_file_entries_are_refused(raw):
    FileEntry.parse(GOOD, 0)  # the base entry itself is fine: each case fails on its one field
    with pytest.raises(BadRequest):
        FileEntry.parse(raw, 0)
