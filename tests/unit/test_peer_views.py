"""The peer's /search and /locate over Flask's test client, with a recording transport."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from common.config import Friend, Settings
from common.errors import NoAnswer
from peer_app import create_app


class Recorder:
    """A transport that records every call and answers like an empty peer (or fails)."""

    def __init__(self, fail: AbstractSet[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.fail = fail

    def __call__(self, url, route, params, timeout):
        self.calls.append((url, route, params))
        if url in self.fail:
            raise NoAnswer(url)
        return {
            "qid": params["qid"],
            "duplicate": False,
            "results": [],
            "visited": [url],
            "messages": 0,
            "complete": True,
            "missing": [],
        }


@pytest.fixture
def peer_with(make_config):
    """peer_with(transport, **settings): a peer's REST app whose discovery goes through transport."""

    def make(transport, **settings):
        config = make_config(
            "peer",
            name="p1",
            rest_port=1,
            grpc_port=2,
            friends={"primary": Friend("p2", "http://p2:1"), "backup": Friend("p3", "http://p3:1")},
            settings=Settings(**settings),
        )
        (Path(config.shared_dir) / "song.mp3").write_bytes(b"la la")
        return create_app(config, transport=transport).test_client()

    return make


def test_search_caps_the_ttl_at_the_configured_maximum(peer_with):
    transport = Recorder()
    client = peer_with(transport, search_max_ttl=10)
    body = client.get("/search?query=song&ttl=50&fanout=2").get_json()
    assert body["results"][0]["peer"] == "p1" and body["results"][0]["file"] == "song.mp3"
    assert {int(params["ttl"]) for _, _, params in transport.calls} == {9}


def test_search_defaults_to_the_gnutella_ttl(peer_with):
    transport = Recorder()
    peer_with(transport).get("/search?query=x")
    assert {int(params["ttl"]) for _, _, params in transport.calls} == {6}


def test_search_caps_the_fanout(peer_with):
    transport = Recorder()
    client = peer_with(transport, search_max_fanout=1)
    client.get("/search?query=x&fanout=5")
    assert [url for url, _, _ in transport.calls] == ["http://p2:1"]


def test_search_counts_handled_and_duplicate_queries(peer_with):
    client = peer_with(Recorder())
    for _ in range(2):
        client.get("/search?query=x&ttl=1&qid=abcdefgh1")
    text = client.get("/metrics").get_data(as_text=True)
    assert "p2p_search_handled_total 1.0" in text
    assert "p2p_search_duplicates_total 1.0" in text


def test_locate_with_a_dead_primary_asks_the_backup(peer_with):
    transport = Recorder(fail={"http://p2:1"})
    client = peer_with(transport)
    assert client.get("/locate?file=nowhere.txt").status_code == 404
    assert [url for url, _, _ in transport.calls] == ["http://p2:1", "http://p3:1"]
    assert client.get("/locate?file=song.mp3").get_json()["peers"][0]["name"] == "p1"


@pytest.mark.parametrize(
    "query",
    [
        "/search?query=x&ttl=-1",
        "/search?query=x&fanout=abc",
        "/search",
        "/search?query=" + "x" * 300,
        "/locate",
        "/locate?file=../etc",
        "/search?query=x&qid=bad!",
    ],
    ids=["negative-ttl", "text-fanout", "no-query", "oversized", "no-file", "escaping-name", "bad-qid"],
)
def test_bad_search_input_is_a_json_4xx(peer_with, query):
    resp = peer_with(Recorder()).get(query)
    assert 400 <= resp.status_code < 500 and resp.get_json()["error"]


def test_search_answers_say_whether_they_are_whole(peer_with):
    whole = peer_with(Recorder()).get("/search?query=song&ttl=3").get_json()
    assert (whole["complete"], whole["missing"]) == (True, [])
    partial = peer_with(Recorder(fail={"http://p2:1"})).get("/search?query=song&ttl=3").get_json()
    assert partial["complete"] is False
    assert partial["missing"] == [{"peer": "p2", "why": "unreachable"}]
    assert [r["peer"] for r in partial["results"]] == ["p1"]  # its own results are still there


def test_a_locate_404_carries_complete_and_what_is_missing(peer_with):
    resp = peer_with(Recorder(fail={"http://p2:1"})).get("/locate?file=nowhere.txt")
    assert resp.status_code == 404
    body = resp.get_json()
    assert (body["error"], body["complete"]) == ("not_found", False)
    assert body["missing"] == [{"peer": "p2", "why": "unreachable"}]
