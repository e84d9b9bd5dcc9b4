"""Liveness like a tracker: peers that stop beating expire, come back on their next beat."""

from __future__ import annotations

import signal

import pytest
import requests

from common.config import Settings
from maestro_app.directory import Directory, FileEntry
from tests.support import get_json, wait_until


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


def alive(maestro_url: str) -> dict[str, bool]:
    return {p["name"]: p["alive"] for p in get_json(maestro_url + "/peers")[1]["peers"]}


def locate(maestro_url: str, name: str) -> set[str]:
    status, body = get_json(maestro_url + "/locate", params={"file": name})
    return {p["name"] for p in body["peers"]} if status == 200 else set()


@pytest.mark.e2e
def test_stopped_peer_expires_within_three_beats_and_comes_back(network):
    settings = Settings(heartbeat_interval=0.4, expire_after_beats=3.0, request_timeout=1.0, rest_workers=1)
    nodes = network(
        ["peer1", "peer2", "peer3"], settings=settings, files={"peer1": {"a.txt": b"a"}, "peer2": {"a.txt": b"a"}}
    )
    maestro = nodes["maestro"].url
    wait_until(lambda: locate(maestro, "a.txt") == {"peer1", "peer2"}, 10, what="both holders registered")
    grpc = next(p for p in nodes["peer1"].processes if "peer_app.grpc_server" in p.args)
    grpc.stop()
    # Three beats plus jitter and one poll: well under 2.5 s.
    wait_until(lambda: alive(maestro)["peer1"] is False, 2.5, what="peer1 marked not alive")
    assert locate(maestro, "a.txt") == {"peer2"}
    assert alive(maestro)["peer2"] is True
    grpc.start()
    wait_until(lambda: locate(maestro, "a.txt") == {"peer1", "peer2"}, 10, what="peer1 back in /locate")


@pytest.mark.e2e
def test_maestro_killed_and_restarted_keeps_its_directory(network):
    settings = Settings(heartbeat_interval=5.0, request_timeout=1.0, rest_workers=1)
    nodes = network(["peer1", "peer2"], settings=settings, files={"peer1": {"a.txt": b"a"}})
    maestro = nodes["maestro"]
    wait_until(lambda: locate(maestro.url, "a.txt") == {"peer1"}, 10, what="peer1 registered")
    for p in maestro.processes:
        p.signal_group(signal.SIGKILL)
        p.popen.wait(5)
        p.start()
    maestro.wait_healthy()
    # Long beats: the answer comes from the directory on disk, not from a fresh registration.
    assert locate(maestro.url, "a.txt") == {"peer1"}
    assert requests.get(maestro.url + "/", timeout=5).json()["peers"] == 2


@pytest.mark.e2e
def test_a_pruned_peer_is_learned_again_when_it_returns(network):
    settings = Settings(heartbeat_interval=0.5, request_timeout=0.5, rest_workers=1, prune_after_failures=2)
    nodes = network(["peer1", "peer2", "peer3", "peer4"], settings=settings)
    p1 = nodes["peer1"].url
    peer4 = nodes["peer4"].url

    def peer1_knows() -> dict[str, str]:
        return {p["name"]: p["role"] for p in get_json(p1 + "/peers")[1]["peers"]}

    # peer4's friends are peer1 and peer2: its bootstrap taught peer1 about it.
    wait_until(lambda: peer1_knows().get("peer4") == "learned", 10, what="peer1 learned peer4")
    nodes["peer4"].stop()
    for _ in range(2):  # each search asks every known peer (fanout 8), so peer4 fails twice
        get_json(p1 + "/search", params={"query": "x", "ttl": 2, "fanout": 8})
    assert "peer4" not in peer1_knows()
    assert set(peer1_knows()) == {"peer2", "peer3"}  # failing friends would stay; these answer
    nodes["peer4"].start()
    nodes["peer4"].wait_healthy()
    wait_until(lambda: peer1_knows().get("peer4") == "learned", 10, what="peer1 learned peer4 again")
    assert requests.get(peer4 + "/health", timeout=2).status_code == 200
