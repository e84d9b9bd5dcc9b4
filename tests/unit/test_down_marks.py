"""A peer that gives no answer is skipped for a while, so a cut-off friend costs one timeout, not one per lookup."""

from __future__ import annotations

import contextlib

from common.errors import NoAnswer, NotFound, Unavailable
from peer_app.search import new_qid
from peer_app.state import KnownPeers, open_db
from tests.fakenet import FakeNetwork
from tests.support import Clock


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
