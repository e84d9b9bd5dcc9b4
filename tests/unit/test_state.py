"""Known peers (friends first, pruning of learned peers) and seen query ids, in SQLite."""

from __future__ import annotations

import threading

from peer_app.state import KnownPeers, SeenQueries, open_db


def make_known(tmp_path, prune_after=3) -> KnownPeers:
    known = KnownPeers(open_db(str(tmp_path / "p.sqlite3")), prune_after=prune_after, self_url="http://me:1")
    known.add("http://f1:1", "f1", role="primary")
    known.add("http://f2:1", "f2", role="backup")
    return known


def urls(known: KnownPeers) -> list[str]:
    return [p["url"] for p in known.all()]


def test_a_learned_peer_that_keeps_failing_is_pruned_and_learned_again(tmp_path):
    known = make_known(tmp_path)
    known.add("http://l1:1", "l1")
    for _ in range(2):
        known.failed("http://l1:1")
    assert "http://l1:1" in urls(known)
    known.failed("http://l1:1")
    assert "http://l1:1" not in urls(known)
    known.add("http://l1:1", "l1")  # it came back and registered again
    assert urls(known)[-1] == "http://l1:1"
    assert {p["url"]: p["failures"] for p in known.all()}["http://l1:1"] == 0


def test_a_success_resets_the_failure_count(tmp_path):
    known = make_known(tmp_path)
    known.add("http://l1:1", "l1")
    known.failed("http://l1:1")
    known.failed("http://l1:1")
    known.succeeded("http://l1:1")
    known.failed("http://l1:1")
    assert "http://l1:1" in urls(known)


def test_friends_are_never_pruned_and_keep_their_role(tmp_path):
    known = make_known(tmp_path)
    for _ in range(10):
        known.failed("http://f1:1")
    known.add("http://f1:1", "f1")  # learning a friend again does not demote it
    assert [(p["url"], p["role"]) for p in known.friends()] == [("http://f1:1", "primary"), ("http://f2:1", "backup")]


def test_a_peer_never_knows_itself(tmp_path):
    known = make_known(tmp_path)
    assert known.add("http://me:1/", "me") is False
    assert "http://me:1" not in urls(known)


def test_seen_queries_are_shared_by_every_connection_to_the_file(tmp_path):
    path = str(tmp_path / "p.sqlite3")
    first, second = SeenQueries(open_db(path)), SeenQueries(open_db(path))  # two workers
    assert first.first_time("q-12345678") is True
    assert second.first_time("q-12345678") is False
    assert second.first_time("q-87654321") is True


def test_a_connection_never_gets_the_rows_read_by_one_freed_before_it(tmp_path):
    """Connections are per thread: one opened after another's thread ended may have its id, never its cache."""
    known = KnownPeers(open_db(str(tmp_path / "p.sqlite3")), prune_after=3, self_url="http://me:1")
    worker = KnownPeers(open_db(str(tmp_path / "p.sqlite3")), prune_after=3, self_url="http://me:1")

    def read_in_a_new_thread() -> list[str]:
        out: list[list[str]] = []
        thread = threading.Thread(target=lambda: out.append([p["name"] for p in known.all()]))
        thread.start()
        thread.join()
        return out[0]

    for i in range(30):
        assert sorted(read_in_a_new_thread()) == sorted(f"p{j}" for j in range(i))
        worker.add(f"http://p{i}:1", f"p{i}")  # another worker learns a peer
