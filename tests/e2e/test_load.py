"""Under load and abuse, nothing stalls and nothing lies: a real 10-peer ring brought up by the launcher.

One network for the module (supervisord, gevent REST workers, gRPC processes; friends i+1 and
i+2; heartbeats every 0.5 s so the Maestro's expiry window is short). Each test is bounded in
count and time; the full-size figures, and gthread beside gevent, come from `bench.rest_load`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from common.http import new_session
from control import topology
from control.generate import opposite
from control.network import Network
from tests.launcher_support import launcher, ring_topology
from tests.support import get_json, wait_until

PEERS = 10
SETTINGS = {"heartbeat_interval": 0.5, "request_timeout": 2.0, "search_timeout": 10.0}  # a caller may give 10 s
SHARED_BY_THREE = ("peer1", "peer4", "peer7")
CALLERS = 200


@dataclass
class Ring:
    """The running ring seen from outside."""

    network: Network
    names: list[str]
    urls: dict[str, str]
    maestro_url: str

    def far(self, i: int) -> tuple[str, str]:
        """(the peer across the ring from peer i, the file only it holds)."""
        owner = opposite(self.names, i)
        return owner, f"archivo{owner.removeprefix('peer')}.txt"


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    path = ring_topology(tmp_path_factory.mktemp("load"), peers=PEERS, settings=SETTINGS)
    for name in SHARED_BY_THREE:
        (path.parent / "data" / name / "shared-by-three.txt").write_bytes(b"three copies\n")
    launcher("up", str(path), "--timeout", "90")
    network = Network(topology.load(path))
    try:
        yield Ring(
            network,
            [p.name for p in network.topology.peers],
            {p.name: p.rest_url for p in network.topology.peers},
            network.topology.maestro.url,
        )
    finally:
        launcher("down", str(path))


@contextlib.contextmanager
def half_open_requests(host: str, port: int, n: int) -> Iterator[list[socket.socket]]:
    """n connections that start a request and never finish its headers."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=5)
            socks.append(s)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
        yield socks
    finally:
        for s in socks:
            s.close()


def unread_connections(port: int) -> tuple[int, int]:
    """(established TCP connections to local port, how many of them hold bytes the server has not read)."""
    established = unread = 0
    for line in open("/proc/net/tcp", encoding="ascii").readlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":  # 01: ESTABLISHED
            established += 1
            unread += int(queues.split(":")[1], 16) > 0
    return established, unread


def health_answers(url: str, probes: int, timeout: float) -> list[int | str]:
    """GET /health probes times, each on a fresh connection: the statuses (or the error's name)."""
    out: list[int | str] = []
    for _ in range(probes):
        try:
            with new_session() as s:
                out.append(s.get(url + "/health", timeout=timeout).status_code)
        except requests.RequestException as err:
            out.append(type(err).__name__)
    return out


@pytest.mark.parametrize("node", ["peer1", "maestro"])
def test_health_answers_while_200_slow_clients_hold_connections(ring, node):
    url = ring.maestro_url if node == "maestro" else ring.urls[node]
    host, port = url.split("//")[1].rsplit(":", 1)
    with half_open_requests(host, int(port), CALLERS) as held:
        assert len(held) == CALLERS

        # The server has taken every slow client in and read its first bytes: a thread-per-connection
        # server would be stuck on them now (and leave the rest unread in its accept queue).
        def all_read() -> bool:
            established, unread = unread_connections(int(port))
            return established >= CALLERS and unread == 0  # peers' keep-alive connections count too

        wait_until(all_read, 10, what="every slow client's first line read")
        # A /health that does not answer in 5 s is one stuck behind the slow clients (it answers in ms).
        answers = health_answers(url, probes=10, timeout=5.0)
    assert answers == [200] * 10, answers


def released_together(calls: list[Callable[[], dict]]) -> list[dict]:
    """Run every call on its own thread, all released at the same moment; their results in order."""
    results: list[dict] = [{} for _ in calls]
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def ask(url: str, route: str, params: dict) -> Callable[[], dict]:
    """A caller asking url/route once: {"status", "body"} ({"status": 0} when nothing answered)."""

    def call() -> dict:
        try:
            with new_session() as s:
                resp = s.get(f"{url}/{route}", params=params, timeout=30.0)
                return {"status": resp.status_code, "body": resp.json()}
        except (requests.RequestException, ValueError) as err:
            return {"status": 0, "error": type(err).__name__}

    return call


def test_200_searches_released_together_are_whole_or_say_they_are_not(ring):
    asked = []
    for k in range(CALLERS):
        i = k % PEERS
        owner, name = ring.far(i)
        asked.append((owner, ask(ring.urls[ring.names[i]], "search", {"query": name, "fanout": 2, "budget": 10.0})))
    answers = released_together([call for _, call in asked])
    found = [
        a["status"] == 200 and any(r.get("peer") == owner for r in a["body"]["results"])
        for (owner, _), a in zip(asked, answers, strict=True)
    ]
    silently_short = [
        a for a, f in zip(answers, found, strict=True) if not f and a.get("body", {}).get("complete") is not False
    ]
    assert silently_short == []  # a search that misses the far file says complete: false
    complete = sum(a.get("body", {}).get("complete") is True for a in answers)
    assert complete >= CALLERS - 10, [
        a.get("body", {}).get("missing") for a in answers if a.get("body", {}).get("complete") is not True
    ]


def test_200_p2p_locates_released_together_never_answer_a_false_404(ring):
    asked = []
    for k in range(CALLERS):
        i = k % PEERS
        owner, name = ring.far(i)
        asked.append((owner, ask(ring.urls[ring.names[i]], "locate", {"file": name})))
    answers = released_together([call for _, call in asked])
    statuses = [a["status"] for a in answers]
    assert 404 not in statuses, statuses  # every file asked for exists
    found = sum(
        a["status"] == 200 and any(p.get("name") == owner for p in a["body"]["peers"])
        for (owner, _), a in zip(asked, answers, strict=True)
    )
    assert found >= CALLERS - 10, statuses


def alive_peers(ring: Ring) -> set[str]:
    status, body = get_json(ring.maestro_url + "/peers", timeout=2)
    return {p["name"] for p in body["peers"] if p["alive"]} if status == 200 else set()


def maestro_answers(ring: Ring) -> bool:
    try:
        return get_json(ring.maestro_url + "/health", timeout=0.5)[0] == 200
    except OSError:
        return False


def test_the_maestro_killed_10_times_as_soon_as_it_answers_comes_back_each_time_with_every_peer_alive(ring):
    everyone = set(ring.names)
    wait_until(lambda: alive_peers(ring) == everyone, 15, what="every peer alive before the storm")
    returns = []
    for kill in range(1, 11):
        start = time.monotonic()
        # supervisord retries after 1, 2, 3 s, then FATAL; p2p-restarter starts it again after 1, 2, 4 s
        wait_until(lambda: maestro_answers(ring), 30, interval=0.02, what=f"the Maestro back before kill {kill}")
        returns.append(round(time.monotonic() - start, 2))
        assert alive_peers(ring) == everyone, f"kill {kill}: the Maestro counted its own downtime against peers"
        ring.network.kill("maestro")
    wait_until(lambda: maestro_answers(ring), 30, what="the Maestro back after the storm")
    print({"seconds_to_return": returns})
    assert alive_peers(ring) == everyone
    status, body = get_json(ring.maestro_url + "/locate", params={"file": "shared-by-three.txt"})
    assert status == 200 and {p["name"] for p in body["peers"]} == set(SHARED_BY_THREE)
    states = {p.state for p in ring.network.supervisor.group("maestro")}
    assert states == {"RUNNING"} or wait_until(
        lambda: {p.state for p in ring.network.supervisor.group("maestro")} == {"RUNNING"}, 10
    )


def test_every_node_is_still_healthy_after_the_load(ring):
    for node, url in [("maestro", ring.maestro_url), *ring.urls.items()]:
        assert get_json(url + "/health", timeout=2)[0] == 200, node
