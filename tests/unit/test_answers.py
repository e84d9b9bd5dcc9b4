"""Remote answers are checked before they are merged (peer_app/answers.py)."""

from __future__ import annotations

import pytest

from common.fields import MAX_ADDRESS, MAX_FILE_SIZE, MAX_MTIME, MAX_REASON, MIN_MTIME
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


# --- the same bounds as every other reader (common/fields.py) ------------------------------------


def holder(**over) -> dict:
    return {"name": "peer2", **{k: v for k, v in hit(**over).items() if k not in ("file", "peer")}}


@pytest.mark.parametrize(
    "field, at_the_bound, past_it",
    [
        ("size", MAX_FILE_SIZE, MAX_FILE_SIZE + 1),  # what the Maestro takes, not SQLite's 2**63 - 1
        ("rest_url", "http://" + "h" * (MAX_ADDRESS - 12) + ":9003", "http://" + "h" * (MAX_ADDRESS - 11) + ":9003"),
        ("grpc_address", "h" * (MAX_ADDRESS - 5) + ":9004", "h" * (MAX_ADDRESS - 4) + ":9004"),
        ("mtime", MIN_MTIME, MIN_MTIME - 1),  # before 1970 is honest (a peer's index lists it)
        ("mtime", MAX_MTIME, MAX_MTIME + 1),
    ],
    ids=["size", "rest_url", "grpc_address", "mtime-low", "mtime-high"],
)
def test_a_remote_holder_is_held_to_the_bounds_the_maestro_and_the_index_use(field, at_the_bound, past_it):
    assert locate_answer({"peers": [holder(**{field: at_the_bound})]}, me="peer1")["peers"][0][field] == at_the_bound
    with pytest.raises(BadAnswer):
        locate_answer({"peers": [holder(**{field: past_it})]}, me="peer1")


def test_a_grpc_address_without_a_port_is_dropped_as_the_maestro_refuses_it():
    with pytest.raises(BadAnswer, match="HOST:PORT"):
        search_answer({"results": [hit(grpc_address="10.0.0.2")]}, me="peer1")


def test_a_missing_entry_is_held_to_the_address_and_reason_bounds():
    entry = {"peer": "h" * MAX_ADDRESS, "why": "w" * MAX_REASON}
    answer = {"results": [], "visited": [], "messages": 0, "complete": False, "missing": [entry]}
    assert search_answer(answer, me="peer1")["missing"] == [entry]
    for longer in ({**entry, "peer": entry["peer"] + "h"}, {**entry, "why": entry["why"] + "w"}):
        with pytest.raises(BadAnswer):
            search_answer({**answer, "missing": [longer]}, me="peer1")
