"""Remote answers are checked before they are merged (peer_app/answers.py)."""

from __future__ import annotations

import pytest

from peer_app.answers import IMPERSONATION, MALFORMED, OVERSIZED, BadAnswer, locate_answer, search_answer

SHA = "a" * 64


def hit(**over) -> dict:
    return {
        "file": "archivo2.txt",
        "peer": "peer2",
        "rest_url": "http://10.0.0.2:9003",
        "grpc_address": "10.0.0.2:9004",
        "size": 4,
        "sha256": SHA,
        **over,
    }


def test_an_honest_search_answer_comes_back_clean():
    answer = {
        "qid": "q" * 32,
        "results": [hit(extra="dropped")],
        "visited": ["peer2", "peer3"],
        "messages": 2,
        "complete": False,
    }
    clean = search_answer(answer, me="peer1")
    assert clean == {"results": [hit()], "visited": ["peer2", "peer3"], "messages": 2, "complete": False}


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("nonsense", MALFORMED),
        ({"results": [], "visited": [], "messages": "x"}, MALFORMED),
        ({"results": "x"}, MALFORMED),
        ({"results": [hit(size=-1)]}, MALFORMED),
        ({"results": [hit(size=2**70)]}, MALFORMED),
        ({"results": [hit(size=True)]}, MALFORMED),
        ({"results": [hit(file="../etc/passwd")]}, MALFORMED),
        ({"results": [hit(peer="Peer Two")]}, MALFORMED),
        ({"results": [hit(sha256="nothex")]}, MALFORMED),
        ({"results": [hit(grpc_address=None)]}, MALFORMED),
        ({"results": [hit(rest_url="x" * 600)]}, MALFORMED),
        ({"results": [hit()], "complete": "yes"}, MALFORMED),
        ({"results": [hit()] * 1001}, OVERSIZED),
        ({"results": [], "visited": ["p"] * 5000}, OVERSIZED),
        ({"results": [hit(peer="peer1")]}, IMPERSONATION),
    ],
    ids=[
        "not-an-object",
        "messages-x",
        "results-not-list",
        "negative-size",
        "huge-size",
        "bool-size",
        "path-name",
        "bad-peer-name",
        "bad-sha",
        "no-address",
        "long-url",
        "complete-not-bool",
        "too-many-results",
        "too-many-visited",
        "claims-to-be-me",
    ],
)
def test_a_malformed_or_lying_search_answer_is_dropped_with_its_reason(answer, reason):
    with pytest.raises(BadAnswer) as caught:
        search_answer(answer, me="peer1")
    assert caught.value.reason == reason


def test_locate_answers_are_checked_too():
    holder = {
        "name": "peer2",
        "rest_url": "http://h:1",
        "grpc_address": "h:2",
        "size": 3,
        "sha256": SHA,
        "mtime": 1.5,
        "last_seen": 9,
    }
    assert locate_answer({"peers": [holder], "via": ["peer2"]}, me="peer1") == {
        "peers": [{k: v for k, v in holder.items() if k != "last_seen"}],
        "via": ["peer2"],
    }
    for bad in ({"peers": "nonsense"}, {"peers": [{**holder, "size": "3"}]}, {"peers": [holder], "via": "x"}):
        with pytest.raises(BadAnswer):
            locate_answer(bad, me="peer1")
    with pytest.raises(BadAnswer) as caught:
        locate_answer({"peers": [{**holder, "name": "peer1"}]}, me="peer1")
    assert caught.value.reason == IMPERSONATION
