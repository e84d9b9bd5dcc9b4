"""Flood search and friend-chain locate on a fake network of Discovery objects (no sockets)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from common.errors import NotFound
from peer_app.search import Query, new_qid
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
    answer = net["p0"].locate("f.txt", qid=new_qid(), ttl=7, budget=3.0, path=[])
    assert answer["peers"][0]["name"] == "p4"
    assert answer["peers"][0]["grpc_address"] == "p4.test:81"
    assert answer["via"][0] == "p0" and answer["via"][-1] == "p4"
    assert net.calls[0][0] == net.url("p1")  # the primary friend first


def test_locate_skips_a_dead_primary_after_one_bounded_timeout(ring):
    net = ring(6, {"p2": ["f.txt"]})
    net.slow[net.url("p1")] = 30.0  # hangs: costs one request timeout, no more
    start = time.monotonic()
    answer = net["p0"].locate("f.txt", qid=new_qid(), ttl=3, budget=2.0, path=[])
    assert time.monotonic() - start < 2.0
    assert answer["peers"][0]["name"] == "p2"
    assert [url for url, _, _ in net.calls] == [net.url("p1"), net.url("p2")]


def test_a_holder_answers_a_locate_it_already_saw_through_a_slower_path(ring):
    # p1 forwarded the query to p2, then took too long to answer p0; p0 now asks p2 directly.
    net = ring(6, {"p2": ["f.txt"]})
    qid = new_qid()
    assert net["p2"].seen.first_time("locate:" + qid)
    net.dead.add(net.url("p1"))
    answer = net["p0"].locate("f.txt", qid=qid, ttl=3, budget=2.0, path=[])
    assert answer["peers"][0]["name"] == "p2"


def test_locate_stops_at_the_ttl(ring):
    net = ring(20, {"p10": ["f.txt"]})
    with pytest.raises(NotFound):
        net["p0"].locate("f.txt", qid=new_qid(), ttl=3, budget=3.0, path=[])
    assert all(int(p["ttl"]) >= 1 for _, _, p in net.calls)
    assert max(ring_distance("p0", url.split("//")[1].split(".")[0], 20) for url, _, _ in net.calls) <= 4
