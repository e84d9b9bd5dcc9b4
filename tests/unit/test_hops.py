"""Search hops: who may send hop fields, the `reached` list and the plan (peer_app/hops.py)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from common.config import Friend, Security
from common.errors import BadRequest
from common.security import ensure_secret, operator_token, peer_token, read_secret
from peer_app import create_app
from peer_app.hops import MAX_REACHED, format_plan, make_plan, parse_names, parse_plan, plan_names
from peer_app.search import NOT_KNOWN, Gate, Query, new_qid
from tests.fakenet import FakeNetwork
from tests.unit.test_peer_views import Recorder


@pytest.fixture
def ring(tmp_path):
    nets = []

    def make(n: int, files=None) -> FakeNetwork:
        nets.append(FakeNetwork.ring(tmp_path, n, files))
        return nets[-1]

    yield make
    for net in nets:
        net.close()


def hop(net: FakeNetwork, to: str, **params) -> dict:
    """A hop to peer `to` as another peer sends it."""
    base = {"query": "", "qid": new_qid(), "ttl": 5, "fanout": 2, "budget": 2.0}
    return net.transport(net.url(to), "/search", {**base, **params}, 2.0)


# --- the plan ----------------------------------------------------------------------------------


def test_a_plan_travels_as_text_and_back():
    plan: list = [("a", [("b", []), ("c", [("d", [])])]), ("e", [])]
    assert format_plan(plan) == "a(b,c(d)),e"
    assert parse_plan("a(b,c(d)),e") == plan
    assert list(plan_names(plan)) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    "text", ["a(", "a)", "(a)", "a,,b", "a(b))", "a b", "A", "a(b,)", ",a", "a" + "(b" * 20 + ")" * 20]
)
def test_a_malformed_plan_is_refused(text):
    with pytest.raises(BadRequest):
        parse_plan(text)


def test_a_plan_names_each_peer_once_asks_at_most_fanout_and_stays_within_the_depth():
    orders = {f"p{i}": [f"p{(i + d) % 12}" for d in (1, 2, 3, -1)] for i in range(12)}
    plan = make_plan(orders["p0"], orders, {"p0"}, fanout=2, depth=3)
    names = list(plan_names(plan))
    assert len(names) == len(set(names)) and "p0" not in names

    def check(share, depth):
        assert len(share) <= 2 and (depth > 0 or not share)
        for _, kids in share:
            check(kids, depth - 1)

    check(plan, 3)


# --- the reached list --------------------------------------------------------------------------


def test_an_oversized_reached_list_is_refused():
    assert len(parse_names(",".join(f"p{i}" for i in range(MAX_REACHED)))) == MAX_REACHED
    with pytest.raises(BadRequest):
        parse_names(",".join(f"p{i}" for i in range(MAX_REACHED + 1)))
    with pytest.raises(BadRequest):
        parse_names("p1,http://evil:1")


def test_a_warm_flood_asks_every_peer_of_a_ring_once(ring):
    net = ring(10, {"p5": ["far.bin"]})
    net["p0"].search(Query("far", new_qid(), 7, 2, 3.0))  # the first flood also learns the peers' orders
    net.calls.clear()
    net.handled.clear()
    answer = net["p0"].search(Query("far", new_qid(), 7, 2, 3.0))
    assert [r["peer"] for r in answer["results"]] == ["p5"] and answer["complete"] is True
    assert len(net.calls) == 9 == len(set(net.handled))  # one message per other peer, none twice
    assert answer["messages"] == 9


def test_a_lying_list_starves_only_the_liars_own_subtree(ring):
    # A member claims every peer was reached already: the peer it asks forwards to nobody, and
    # answers what it has itself (as a member that does not forward at all would make it).
    net = ring(6, {"p1": ["a.txt"], "p3": ["a.txt"]})
    answer = hop(net, "p1", query="a", reached=",".join(f"p{i}" for i in range(6)))
    assert [r["peer"] for r in answer["results"]] == ["p1"] and answer["complete"] is True
    assert [url for url, _, _ in net.calls] == [net.url("p1")]


def test_unknown_names_in_the_list_change_nothing(ring):
    net = ring(6, {"p3": ["a.txt"]})
    answer = hop(net, "p1", query="a", reached="p0,nobody,ghost-9")
    assert [r["peer"] for r in answer["results"]] == ["p3"] and answer["complete"] is True
    assert Counter(net.handled)["p2"] == 1  # p1 asked its friends as if the list did not name strangers


def test_a_planned_peer_this_peer_does_not_know_is_missing_not_silently_skipped(ring):
    net = ring(6)
    answer = hop(net, "p1", plan="stranger", reached="p0,p1,stranger")
    assert answer["complete"] is False
    assert {"peer": "stranger", "why": NOT_KNOWN} in answer["missing"]


# --- who may send hop fields --------------------------------------------------------------------


class RecordingGate(Gate):
    """A gate that records whether each search entered it as a new search (True) or a hop (False)."""

    def __init__(self) -> None:
        super().__init__(limit=4)
        self.entered: list[bool] = []

    def enter(self, q_origin, budget, gone=lambda: False):
        self.entered.append(q_origin)
        return super().enter(q_origin, budget, gone)


@pytest.fixture
def members_peer(make_config, tmp_path):
    """A peer of a network with a secret, its gate recording, its transport recording; and the secret."""
    secret_file = tmp_path / ".p2p-secret"
    ensure_secret(secret_file)
    config = make_config(
        "peer",
        name="p1",
        rest_port=1,
        grpc_port=2,
        friends={"primary": Friend("p2", "http://p2:1"), "backup": Friend("p3", "http://p3:1")},
    )
    config = dataclasses.replace(config, security=Security(secret_file=str(secret_file)))
    (Path(config.shared_dir) / "song.mp3").write_bytes(b"la la")
    transport = Recorder()
    app = create_app(config, transport=transport)
    gate = app.extensions["discovery"].gate = RecordingGate()
    return app.test_client(), gate, transport, read_secret(secret_file)


FORGED = "/search?query=song&ttl=3&qid=forged-query-1&path=p9,http://p9:1&reached=p2,p3&budget=2"


@pytest.mark.parametrize(
    "who", [None, "operator", "stranger"], ids=["loopback-no-token", "operator-token", "stranger-address"]
)
def test_hop_fields_from_anyone_but_a_peer_do_not_skip_admission(members_peer, who):
    # Replays a forged `path`: it made an outside request a forwarded hop, which skips the line.
    client, gate, transport, secret = members_peer
    headers = {"Authorization": f"Bearer {operator_token(secret)}"} if who == "operator" else {}
    environ = {"REMOTE_ADDR": "10.208.0.2"} if who == "stranger" else {}
    resp = client.get(FORGED, headers=headers, environ_base=environ)
    assert resp.status_code == 200  # reads are open: a stranger may search, as a user
    body = resp.get_json()
    assert gate.entered == [True]  # in line as a new search
    assert body["qid"] != "forged-query-1"
    assert {p["qid"] for _, _, p in transport.calls} == {body["qid"]}
    assert sorted(url for url, _, _ in transport.calls) == ["http://p2:1", "http://p3:1"]  # not "reached"


def test_a_peer_credential_makes_a_request_a_hop(members_peer):
    client, gate, transport, secret = members_peer
    body = client.get(FORGED, headers={"Authorization": f"Bearer {peer_token(secret, 'p9')}"}).get_json()
    assert gate.entered == [False] and body["qid"] == "forged-query-1"
    assert transport.calls == []  # p2 and p3 are reached already: nobody left to ask


def test_a_query_id_sent_in_advance_does_not_cut_a_later_search_short(members_peer):
    # Replays the pre-sent id: a stranger's request with an id, then a user's search with the same id
    # was dropped as a duplicate (no results, no peers asked) while saying complete: true.
    client, _, transport, _ = members_peer
    client.get("/search?query=x&ttl=1&qid=presentqid1", environ_base={"REMOTE_ADDR": "10.208.0.2"})
    body = client.get("/search?query=song&ttl=3&qid=presentqid1").get_json()
    assert body["duplicate"] is False and body["complete"] is True
    assert [r["file"] for r in body["results"]] == ["song.mp3"]
    assert len(transport.calls) == 2
