"""A peer that gives no answer is skipped for a while, so a cut-off friend costs one timeout, not one per lookup."""

from __future__ import annotations

import contextlib
import time

import pytest

from common.config import Friend, Settings
from common.errors import NoAnswer, NotFound, Unavailable
from peer_app.search import PROBE_TIMEOUT, new_qid
from peer_app.state import KnownPeers, open_db
from tests.fakenet import FakeNetwork
from tests.support import Clock, wait_until


def make_known(tmp_path, clock) -> KnownPeers:
    db = open_db(str(tmp_path / "p.sqlite3"))
    known = KnownPeers(db, prune_after=3, self_url="http://me:1", clock=clock, down_mark=5.0, down_mark_max=12.0)
    known.add("http://a:1", "a", role="primary")
    known.add("http://b:1", "b", role="backup")
    return known


def test_a_mark_skips_the_peer_doubles_while_it_keeps_failing_and_ends_by_itself(tmp_path):
    clock = Clock()
    known = make_known(tmp_path, clock)
    assert [known.unreachable("http://a:1") for _ in range(3)] == [5.0, 10.0, 12.0]  # doubled, capped
    assert [p["name"] for p in known.reachable()] == ["b"]
    assert [p["name"] for p in known.all()] == ["a", "b"]  # still known (a friend), shown with its mark
    assert known.all()[0]["down_until"] == clock.now + 12.0
    clock.now += 12.1
    assert [p["name"] for p in known.reachable()] == ["a", "b"]


def test_any_answer_clears_the_mark_and_the_next_failure_starts_short_again(tmp_path):
    clock = Clock()
    known = make_known(tmp_path, clock)
    known.unreachable("http://a:1")
    known.unreachable("http://a:1")
    known.succeeded("http://a:1")
    assert [p["name"] for p in known.reachable()] == ["a", "b"]
    assert known.unreachable("http://a:1") == 5.0


def test_a_learned_peer_gets_no_mark_and_is_pruned_as_before(tmp_path):
    clock = Clock()
    known = make_known(tmp_path, clock)
    known.add("http://c:1", "c")
    assert [known.unreachable("http://c:1") for _ in range(2)] == [0.0, 0.0]
    assert [p["name"] for p in known.reachable()] == ["a", "b", "c"]
    known.unreachable("http://c:1")
    assert [p["name"] for p in known.all()] == ["a", "b"]  # pruned after prune_after=3 failures


def test_marks_are_shared_by_every_connection_to_the_file(tmp_path):
    clock = Clock()
    make_known(tmp_path, clock).unreachable("http://a:1")
    other = make_known(tmp_path, clock)  # another gunicorn worker
    assert [p["name"] for p in other.reachable()] == ["b"]


def cut_off_network(tmp_path, files) -> FakeNetwork:
    """A ring p0..p5 whose unreachable peers give no answer at all (NoAnswer), as a cut cable does."""
    net = FakeNetwork(tmp_path, files)
    plain = net.transport

    def transport(url, route, params, timeout):
        try:
            return plain(url, route, params, timeout)
        except Unavailable as err:
            raise NoAnswer(err.detail) from None

    net.transport = transport  # type: ignore[method-assign]  # before any peer is added, so every peer uses it
    for i in range(6):
        net.add(f"p{i}", [f"p{(i + 1) % 6}", f"p{(i + 2) % 6}"])
    return net


def test_locate_pays_a_cut_off_primary_once_then_goes_straight_to_the_backup(tmp_path):
    net = cut_off_network(tmp_path, {"p2": ["f.txt"]})
    try:
        net.slow[net.url("p1")] = 30.0  # hangs until the caller's timeout
        for _ in range(5):
            answer = net["p0"].locate("f.txt", qid=new_qid(), ttl=3, budget=1.0, reached=[])
            assert answer["peers"][0]["name"] == "p2"
        assert [url for url, _, _ in net.calls].count(net.url("p1")) == 1  # its timeout paid by the first only
        assert {p["name"]: p["down_until"] is not None for p in net["p0"].known.all()} == {"p1": True, "p2": False}
    finally:
        net.close()


def test_a_server_that_answers_with_an_error_is_not_marked_down(tmp_path):
    net = cut_off_network(tmp_path, {})
    try:
        for _ in range(2):
            with contextlib.suppress(NotFound):
                net["p0"].locate("nothing.txt", qid=new_qid(), ttl=2, budget=1.0, reached=[])
        assert [p["down_until"] for p in net["p0"].known.all()] == [None, None]
    finally:
        net.close()


# --- a mark ends on evidence the friend is back ---------------------------------------------------


class Friends:
    """A transport for a peer app whose friend p2 is down (no answer) or up (answers like an empty peer)."""

    def __init__(self) -> None:
        self.down: set[str] = {"http://p2:1"}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, url, route, params, timeout):
        self.calls.append((url, route))
        if url in self.down:
            raise NoAnswer(f"{url} does not answer")
        if route == "/health":
            return {"status": "ok"}
        if route == "/membership":
            return {"name": "p2", "rest_url": url, "grpc_address": "p2:2"}
        return {"qid": params.get("qid"), "peers": [], "complete": True, "missing": []}

    def asked(self, route: str) -> list[str]:
        return [url for url, r in self.calls if r == route]


@pytest.fixture
def p1(make_config):
    """p1 (friends p2, p3), whose marks last a minute unless evidence ends them."""
    from peer_app import create_app

    def make(transport, **settings):
        config = make_config(
            "peer",
            name="p1",
            friends={"primary": Friend("p2", "http://p2:1"), "backup": Friend("p3", "http://p3:1")},
            settings=Settings(down_mark=60.0, down_mark_max=60.0, **settings),
        )
        return create_app(config, transport=transport).test_client()

    return make


def test_a_marked_friend_that_answers_a_probe_is_asked_again_at_once(p1):
    friends = Friends()
    client = p1(friends, down_mark_probe=0.2)
    client.get("/locate?file=x.txt")
    assert friends.asked("/locate") == ["http://p2:1", "http://p3:1"]  # p2 gave no answer: marked
    friends.calls.clear()
    for _ in range(3):  # still down: skipped, and not even probed within the interval
        client.get("/locate?file=x.txt")
    assert friends.asked("/locate") == ["http://p3:1"] * 3 and friends.asked("/health") == []
    friends.down.clear()  # p2 restarted
    wait_until(lambda: client.get("/locate?file=x.txt") and "http://p2:1" in friends.asked("/locate"), 5)
    assert friends.asked("/health").count("http://p2:1") == 1  # one probe ended the mark
    assert client.get("/peers").get_json()["peers"][0]["down_until"] is None


def test_a_marked_friend_still_down_costs_one_probe_per_interval(p1):
    friends = Friends()
    client = p1(friends, down_mark_probe=0.2)
    before = time.time()  # the mark (and the interval's start) comes after this
    client.get("/locate?file=x.txt")
    friends.calls.clear()

    def probed_twice() -> bool:
        client.get("/locate?file=x.txt")
        return friends.asked("/health").count("http://p2:1") >= 2

    wait_until(probed_twice, 10, interval=0.01, what="two probes of the marked friend")
    probes = friends.asked("/health").count("http://p2:1")
    assert probes <= (time.time() - before) / 0.2  # never two within an interval, however slow the lookups were
    assert "http://p2:1" not in friends.asked("/locate")


def test_a_marked_friend_that_registers_here_after_its_restart_is_probed_and_asked_again(p1):
    friends = Friends()
    client = p1(friends, down_mark_probe=0)  # no probes from lookups: only its registration is evidence
    client.get("/locate?file=x.txt")
    friends.down.clear()
    client.get("/locate?file=x.txt")
    assert friends.asked("/locate").count("http://p2:1") == 1  # still marked
    assert client.post("/register", json={"url": "http://p2:1", "name": "p2"}).status_code == 200
    friends.calls.clear()
    client.get("/locate?file=x.txt")
    assert friends.asked("/locate")[0] == "http://p2:1"


def test_a_lookup_past_a_marked_friend_writes_nothing_while_no_probe_is_due(p1):
    friends = Friends()
    client = p1(friends, down_mark_probe=60.0)
    client.get("/locate?file=x.txt")  # p2 gave no answer: marked, its first probe a minute away
    statements: list[str] = []
    client.application.extensions["known_peers"].db.connect().set_trace_callback(statements.append)
    for _ in range(3):
        client.get("/locate?file=x.txt")
    assert friends.asked("/locate").count("http://p2:1") == 1
    assert [s for s in statements if "UPDATE peer_marks" in s] == []


def test_a_hop_with_less_time_left_than_a_probe_takes_makes_none(p1):
    friends = Friends()
    client = p1(friends, down_mark_probe=1e-6)  # a probe is due on every lookup
    client.get("/locate?file=x.txt")
    friends.calls.clear()
    client.get(f"/locate?file=x.txt&budget={PROBE_TIMEOUT * 0.9}")
    assert friends.asked("/health") == []
    client.get("/locate?file=x.txt&budget=2")
    assert friends.asked("/health") == ["http://p2:1"]
