"""Liveness with real processes: a stopped peer expires and returns; a killed Maestro keeps its directory."""

from __future__ import annotations

import signal
import time

import requests

from common.config import Settings
from tests.support import get_json, wait_until


def alive(maestro_url: str) -> dict[str, bool]:
    return {p["name"]: p["alive"] for p in get_json(maestro_url + "/peers")[1]["peers"]}


def locate(maestro_url: str, name: str) -> set[str]:
    status, body = get_json(maestro_url + "/locate", params={"file": name})
    return {p["name"] for p in body["peers"]} if status == 200 else set()


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


def test_maestro_killed_and_restarted_keeps_its_directory(network):
    settings = Settings(heartbeat_interval=5.0, request_timeout=1.0, rest_workers=1)
    nodes = network(["peer1", "peer2"], settings=settings, files={"peer1": {"a.txt": b"a"}})
    maestro = nodes["maestro"]
    wait_until(lambda: locate(maestro.url, "a.txt") == {"peer1"}, 10, what="peer1 registered")
    # peer2 too: its first try may come before the Maestro listens, and the next one a second later
    wait_until(lambda: len(alive(maestro.url)) == 2, 10, what="peer2 registered")
    for p in maestro.processes:
        p.signal_group(signal.SIGKILL)
        p.popen.wait(5)
        p.start()
    maestro.wait_healthy()
    # Long beats: the answer comes from the directory on disk, not from a fresh registration.
    assert locate(maestro.url, "a.txt") == {"peer1"}
    assert requests.get(maestro.url + "/", timeout=5).json()["peers"] == 2


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


def test_a_friend_back_from_a_kill_9_is_asked_again_within_a_second_of_answering(network):
    """A down mark outlived its friend's restart: a P2P /locate skipped a holder that had been back for 4 s."""
    settings = Settings(heartbeat_interval=0.5, request_timeout=1.0, rest_workers=1, down_mark=30.0, down_mark_max=30.0)
    nodes = network(["peer1", "peer2"], settings=settings, files={"peer2": {"only-here.txt": b"x"}})
    peer1, peer2 = nodes["peer1"], nodes["peer2"]

    def via_peer1() -> tuple[int, dict]:
        return get_json(peer1.url + "/locate", params={"file": "only-here.txt"})

    assert via_peer1()[0] == 200
    for p in peer2.processes:
        p.signal_group(signal.SIGKILL)
        p.popen.wait(5)
    status, body = via_peer1()
    assert (status, body["missing"]) == (404, [{"peer": "peer2", "why": "unreachable"}])  # peer2 now has a mark
    assert next(p for p in get_json(peer1.url + "/peers")[1]["peers"] if p["name"] == "peer2")["down_until"]
    peer2.start()
    wait_until(lambda: requests.get(peer2.url + "/health", timeout=1).status_code == 200, 20, what="peer2 up")
    back = time.monotonic()
    wait_until(lambda: via_peer1()[0] == 200, 1.5, interval=0.05, what="peer1 to ask peer2 again")
    print(f"\npeer2 found through peer1 {time.monotonic() - back:.2f}s after its /health answered again")
