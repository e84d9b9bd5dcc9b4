"""Flood search and friend-chain locate on a fake network of Discovery objects (no sockets)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from common.errors import Busy, Incomplete, NotFound
from peer_app.search import Gate, Query, new_qid
from tests.fakenet import FakeNetwork


@pytest.fixture
def ring(tmp_path):
    nets = []

    def make(n: int, files=None, **kw) -> FakeNetwork:
        nets.append(FakeNetwork.ring(tmp_path, n, files, **kw))
        return nets[-1]

    yield make
    for net in nets:
        net.close()


def search(net: FakeNetwork, origin: str, text: str, *, ttl: int = 10, fanout: int = 2, budget: float = 3.0) -> dict:
    return net[origin].search(Query(text, new_qid(), ttl, fanout, budget))


def ring_distance(a: str, b: str, n: int) -> int:
    return (int(b[1:]) - int(a[1:])) % n


def test_flood_reaches_the_far_side_of_a_ring_and_names_the_owner(ring):
    # p10 is 5 hops away (friends i+1, i+2); ttl 10 leaves slack, because a copy that took a
    # longer path and arrived first is the one a peer handles (the later, shorter one is dropped).
    net = ring(20, {"p10": ["far.txt"]})
    answer = search(net, "p0", "far")
    assert [(r["file"], r["peer"], r["grpc_address"], r["size"]) for r in answer["results"]] == [
        ("far.txt", "p10", "p10.test:81", len("far.txt"))
    ]
    assert answer["results"][0]["rest_url"] == net.url("p10")
    assert answer["results"][0]["sha256"] == "0" * 64


def test_every_peer_handles_a_query_at_most_once(ring):
    net = ring(30, {f"p{i}": ["common.txt"] for i in range(30)})
    answer = search(net, "p0", "common", fanout=8)
    handled = Counter(answer["visited"])
    assert handled and max(handled.values()) == 1, handled.most_common(3)
    assert max(Counter(net.handled).values()) == 1
    # In a ring with fanout 2 every peer is offered the query twice: the second copy is dropped.
    assert len(net.calls) > len(net.handled)
    owners = [r["peer"] for r in answer["results"]]
    assert len(owners) == len(set(owners)) == len(answer["visited"])


def test_a_repeated_query_id_is_dropped(ring):
    net = ring(5, {"p0": ["a.txt"]})
    q = Query("a", new_qid(), 3, 2, 1.0)
    assert net["p0"].search(q)["results"]
    again = net["p0"].search(q)
    assert again["duplicate"] is True and again["results"] == [] and again["visited"] == []


@pytest.mark.parametrize("ttl", [1, 2, 3, 5], ids=lambda t: f"ttl{t}")
def test_ttl_bounds_how_far_a_query_travels(ring, ttl):
    net = ring(40)
    answer = search(net, "p0", "nothing", ttl=ttl)
    farthest = max(ring_distance("p0", v, 40) for v in answer["visited"])
    # Each hop moves at most two places round the ring (friends i+1 and i+2).
    assert farthest <= 2 * (ttl - 1)
    assert farthest >= ttl - 1
    assert all(int(params["ttl"]) < ttl for _, _, params in net.calls)


def test_dead_friend_is_skipped_not_fatal(ring):
    net = ring(6, {"p2": ["x.txt"], "p3": ["x.txt"]})
    net.dead.add(net.url("p1"))
    answer = search(net, "p0", "x")
    assert {r["peer"] for r in answer["results"]} == {"p2", "p3"}
    assert "p1" not in answer["visited"]
    friend = {p["name"]: p for p in net["p0"].known.all()}["p1"]
    assert friend["failures"] >= 1 and friend["role"] == "primary"


def test_a_slow_peer_does_not_make_the_origin_miss_its_deadline(ring):
    net = ring(12, {"p1": ["x.txt"], "p6": ["x.txt"]})
    net.slow[net.url("p5")] = 30.0  # hangs far longer than anyone waits
    start = time.monotonic()
    answer = search(net, "p0", "x", budget=1.0)
    took = time.monotonic() - start
    assert took < 1.0, f"origin answered after {took:.2f}s"
    assert "p1" in {r["peer"] for r in answer["results"]}


def test_the_deadline_shrinks_with_every_hop(ring):
    net = ring(30)
    search(net, "p0", "nothing", ttl=8, budget=2.0)
    by_ttl: dict[int, list[float]] = {}
    for _, _, params in net.calls:
        by_ttl.setdefault(int(params["ttl"]), []).append(float(params["budget"]))
    ttls = sorted(by_ttl, reverse=True)
    assert ttls[0] == 7 and len(ttls) >= 5
    for higher, lower in zip(ttls, ttls[1:], strict=False):
        assert max(by_ttl[lower]) < min(by_ttl[higher]), (higher, by_ttl[higher], lower, by_ttl[lower])
    assert max(by_ttl[7]) < 2.0


def test_fanout_limits_the_peers_asked_per_hop(tmp_path):
    net = FakeNetwork(tmp_path)
    origin = net.add("hub", ["a", "b"])
    for name in ("a", "b", "c", "d", "e"):
        net.add(name)
        origin.known.add(net.url(name), name)
    try:
        answer = origin.search(Query("x", new_qid(), 2, 3, 1.0))
    finally:
        net.close()
    assert sorted(answer["visited"]) == ["a", "b", "c", "hub"]  # friends first, then learned
    assert answer["messages"] == 3


def test_locate_asks_primary_then_backup_then_onward(ring):
    net = ring(8, {"p4": ["f.txt"]})
    answer = net["p0"].locate("f.txt", qid=new_qid(), ttl=7, budget=3.0, reached=[])
    assert answer["peers"][0]["name"] == "p4"
    assert answer["peers"][0]["grpc_address"] == "p4.test:81"
    assert answer["via"][0] == "p0" and answer["via"][-1] == "p4"
    assert net.calls[0][0] == net.url("p1")  # the primary friend first


def test_locate_skips_a_dead_primary_after_one_bounded_timeout(ring):
    net = ring(6, {"p2": ["f.txt"]})
    net.slow[net.url("p1")] = 30.0  # hangs: costs one request timeout, no more
    answer = net["p0"].locate("f.txt", qid=new_qid(), ttl=3, budget=2.0, reached=[])
    assert answer["peers"][0]["name"] == "p2"
    assert [url for url, _, _ in net.calls] == [net.url("p1"), net.url("p2")]
    (primary, waited), (backup, given) = net.timeouts
    assert waited < 2.0 and waited + given <= 2.0  # p1 was given part of the budget, and p2 what was left


def test_a_holder_answers_a_locate_it_already_saw_through_a_slower_path(ring):
    # p1 forwarded the query to p2, then took too long to answer p0; p0 now asks p2 directly.
    net = ring(6, {"p2": ["f.txt"]})
    qid = new_qid()
    assert net["p2"].seen.first_time("locate:" + qid)
    net.dead.add(net.url("p1"))
    answer = net["p0"].locate("f.txt", qid=qid, ttl=3, budget=2.0, reached=[])
    assert answer["peers"][0]["name"] == "p2"


def test_locate_stops_at_the_ttl(ring):
    net = ring(20, {"p10": ["f.txt"]})
    with pytest.raises(NotFound):
        net["p0"].locate("f.txt", qid=new_qid(), ttl=3, budget=3.0, reached=[])
    assert all(int(p["ttl"]) >= 1 for _, _, p in net.calls)
    assert max(ring_distance("p0", url.split("//")[1].split(".")[0], 20) for url, _, _ in net.calls) <= 4


# --- every answer says whether it is whole ----------------------------------------------------


def missing_of(answer: dict) -> dict[str, str]:
    return {m["peer"]: m["why"] for m in answer["missing"]}


def test_an_answer_from_a_network_where_everyone_answered_is_complete(ring):
    net = ring(10, {"p5": ["far.txt"]})
    answer = search(net, "p0", "far", ttl=7)
    assert answer["complete"] is True and answer["missing"] == []
    assert [r["peer"] for r in answer["results"]] == ["p5"]


def test_a_dead_peer_makes_the_answer_partial_and_is_named(ring):
    net = ring(8, {"p2": ["x.txt"], "p5": ["x.txt"]})
    net.dead.add(net.url("p3"))
    answer = search(net, "p0", "x", ttl=7)
    assert {r["peer"] for r in answer["results"]} == {"p2", "p5"}  # the rest still answers
    assert answer["complete"] is False
    assert set(missing_of(answer).items()) == {("p3", "unreachable")}


def test_a_hop_cut_at_the_deadline_is_named_and_the_caller_gets_its_answer_in_time(ring):
    net = ring(8, {"p1": ["x.txt"], "p4": ["x.txt"]})
    net.slow[net.url("p2")] = 30.0
    start = time.monotonic()
    answer = search(net, "p0", "x", budget=0.8)
    assert time.monotonic() - start < 0.8 + 0.15  # the flood stops at ~0.7 s; slack for a loaded machine
    assert answer["complete"] is False
    assert missing_of(answer).get("p2") == "timed out"
    assert "p1" in {r["peer"] for r in answer["results"]}


def test_an_answer_that_does_not_check_out_is_dropped_and_named(ring):
    net = ring(6, {"p3": ["x.txt"]})
    net.garbled.add(net.url("p1"))
    answer = search(net, "p0", "x", ttl=7)
    assert answer["complete"] is False
    assert missing_of(answer).get("p1") == "bad answer"
    assert all(isinstance(r, dict) for r in answer["results"])


def test_partial_answers_travel_back_to_the_origin(ring):
    net = ring(10)
    net.dead.add(net.url("p6"))  # far from p0: only deeper hops ask it
    answer = search(net, "p0", "x", ttl=7)
    assert answer["complete"] is False
    assert missing_of(answer) == {"p6": "unreachable"}


class WatchedGate(Gate):
    """A Gate that records how long each new search was allowed to wait in line."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.waits: list[float] = []

    def origin(self, wait: float, gone=lambda: False):
        self.waits.append(wait)
        return super().origin(wait, gone)


@pytest.fixture
def busy_hub(tmp_path):
    """(net, hub, gate): hub asks friends a and b and admits one flood at a time."""
    net = FakeNetwork(tmp_path, {"hub": ["x-hub.txt"], "a": ["x-a.txt"]})
    gate = WatchedGate(limit=1)
    hub = net.add("hub", ["a", "b"], gate=gate)
    net.add("a")
    net.add("b")
    yield net, hub, gate
    net.close()


def test_a_new_search_that_cannot_get_in_line_in_time_is_shed_with_its_own_results(busy_hub):
    net, hub, gate = busy_hub
    with gate.origin(0) as admitted:  # one search is being flooded: the only place is taken
        assert admitted
        answer = hub.search(Query("x", new_qid(), 5, 2, 0.4))
    assert gate.waits[-1] == pytest.approx(0.2, abs=0.05)  # waited in line for what its deadline allowed: half of 0.4 s
    assert answer["complete"] is False and missing_of(answer) == {"hub": "shed"}
    assert [r["peer"] for r in answer["results"]] == ["hub"]
    assert net.calls == []  # shed: nobody else was asked
    answer = hub.search(Query("x", new_qid(), 5, 2, 0.4))  # the place is free again
    assert answer["complete"] is True and {r["peer"] for r in answer["results"]} == {"hub", "a"}


def test_a_locate_that_cannot_get_in_line_is_a_503_that_says_it_is_not_whole(busy_hub):
    net, hub, gate = busy_hub
    with gate.origin(0) as admitted:  # a search is being flooded: the only place is taken
        assert admitted
        with pytest.raises(Busy) as shed:
            hub.locate("x-a.txt", qid=new_qid(), ttl=5, budget=0.4, reached=[])
    assert net.calls == []  # nobody was asked
    body = shed.value.to_json()
    assert (body["error"], body["complete"], body["missing"]) == ("busy", False, [{"peer": "hub", "why": "shed"}])


def test_a_forwarded_hop_beyond_the_hop_limit_is_shed_at_once(tmp_path):
    net = FakeNetwork(tmp_path, {"a": ["x-a.txt"], "c": ["x-c.txt"]})
    origin = net.add("o", ["a", "b"])
    net.add("a", ["c"], gate=Gate(limit=1, hop_limit=0))  # a takes no forwarded hop at all
    net.add("b")
    net.add("c")
    try:
        answer = origin.search(Query("x", new_qid(), 5, 2, 1.0))
    finally:
        net.close()
    assert {r["peer"] for r in answer["results"]} == {"a"}  # a's own files, not c's
    assert answer["complete"] is False and missing_of(answer) == {"a": "shed"}


def test_locate_says_404_only_when_every_friend_asked_answered(ring):
    net = ring(6)
    with pytest.raises(NotFound) as found:
        net["p0"].locate("nowhere.txt", qid=new_qid(), ttl=7, budget=3.0, reached=[])
    assert found.value.extra == {"complete": True, "missing": []}


def test_locate_with_a_friend_that_is_down_is_a_404_that_says_it_is_partial(ring):
    net = ring(6)
    net.dead.add(net.url("p1"))
    with pytest.raises(NotFound) as found:
        net["p0"].locate("nowhere.txt", qid=new_qid(), ttl=7, budget=3.0, reached=[])
    assert found.value.extra["complete"] is False
    assert {"peer": "p1", "why": "unreachable"} in found.value.extra["missing"]


def test_locate_with_a_friend_too_slow_to_answer_is_incomplete_never_a_false_404(ring):
    net = ring(6, {"p4": ["f.txt"]})
    net.slow[net.url("p1")] = 30.0
    net.slow[net.url("p2")] = 30.0
    with pytest.raises(Incomplete) as partial:
        net["p0"].locate("f.txt", qid=new_qid(), ttl=7, budget=1.0, reached=[])
    assert partial.value.http_status == 503
    assert partial.value.to_json()["complete"] is False
    assert {m["why"] for m in partial.value.extra["missing"]} <= {"timed out", "not asked: no time left"}


def test_a_friend_that_was_not_whole_makes_the_locate_partial_too(ring):
    net = ring(6)
    net.dead.add(net.url("p3"))  # not a friend of p0: only its friends' friends ask it
    with pytest.raises(NotFound) as found:
        net["p0"].locate("nowhere.txt", qid=new_qid(), ttl=7, budget=3.0, reached=[])
    assert found.value.extra["complete"] is False
    assert {"peer": "p3", "why": "unreachable"} in found.value.extra["missing"]


def test_a_hop_cut_short_by_a_shrinking_deadline_puts_no_down_mark_on_the_friend(ring):
    net = ring(4)
    net.slow[net.url("p1")] = 30.0
    answer = search(net, "p0", "x", budget=0.5)  # p1 gets far less than request_timeout (2 s)
    assert missing_of(answer).get("p1") == "timed out"
    assert {p["name"]: p["down_until"] for p in net["p0"].known.all()}["p1"] is None


def test_each_hop_reads_its_known_peers_once(ring):
    net = ring(10, {"p5": ["far.bin"]})
    reads: Counter[str] = Counter()
    for peer in net.peers.values():
        read = peer.known.all
        peer.known.all = lambda read=read, name=peer.me["name"]: (reads.update([name]), read())[1]
    for _ in range(2):  # cold (it floods and learns the peers' orders), then warm (by the plan)
        net["p0"].search(Query("far", new_qid(), 7, 2, 3.0, learn=True))
    handled = Counter(net.handled)
    assert handled and reads == handled + Counter({"p0": 2})
