"""Answers from other peers are data to check, never code paths that can fail a request.

Discovery merges what other peers answer to /search and /locate. A peer that lies (claims to be
us, or sends nonsense types) or sends too much must not turn our answer into a 500 nor replace
our own results: each answer goes through one of these functions first, which returns a clean
copy with only the fields we use, or raises BadAnswer naming why it was dropped (the reason is
the label of `p2p_remote_answers_dropped_total`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from common.errors import P2PError
from common.fields import MAX_ADDRESS, MAX_REASON, blake3_problem, grpc_address_problem, mtime_problem, size_problem
from common.names import check_name, peer_name_problem
from peer_app.hops import parse_knows

MAX_RESULTS = 1000  # search results in one remote answer
MAX_VISITED = 1024  # peer names in a remote answer's `visited`
MAX_MESSAGES = 1_000_000
log = logging.getLogger(__name__)

MALFORMED = "malformed"  # not the shape of an answer: wrong types, missing fields
OVERSIZED = "oversized"  # more results or names than any honest peer sends
IMPERSONATION = "impersonation"  # claims results in this peer's name


class BadAnswer(ValueError):
    """A remote answer was dropped; reason is one of the constants above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _fail(detail: str) -> BadAnswer:
    return BadAnswer(MALFORMED, detail)


def _int(value: Any, key: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _fail(f"{key} must be an integer in [0, {maximum}], got {str(value)[:40]!r}")
    return value


def _text(value: Any, key: str, maximum: int) -> str:
    if not isinstance(value, str) or not value or len(value) > maximum:
        raise _fail(f"{key} must be a non-empty string of at most {maximum} characters")
    return value


def _peer(value: Any, key: str) -> str:
    problem = peer_name_problem(value)
    if problem is not None:
        raise _fail(f"{key}: {problem}")
    return value


def _file(value: Any, key: str) -> str:
    try:
        return check_name(value)
    except P2PError as err:
        raise _fail(f"{key}: {err.detail}") from None


def _field(value: Any, key: str, problem: Callable[[object], str | None]) -> Any:
    """value when its common/fields.py rule finds no problem with it."""
    why = problem(value)
    if why is not None:
        raise _fail(f"{key} {why}")
    return value


def _sha(value: Any, key: str) -> str:
    """A hex digest of 32 bytes (sha256, blake3), or "" when absent."""
    return "" if value is None else _field(value, key, blake3_problem)


def _list(value: Any, key: str, maximum: int) -> list:
    if not isinstance(value, list):
        raise _fail(f"{key} must be a list")
    if len(value) > maximum:
        raise BadAnswer(OVERSIZED, f"{key} holds {len(value)} entries (at most {maximum})")
    return value


def _missing(answer: dict, clean: dict) -> None:
    """Pass on the `complete` flag and the `missing` hops of an answer that has them, checked."""
    if "complete" in answer:
        if not isinstance(answer["complete"], bool):
            raise _fail("complete must be true or false")
        clean["complete"] = answer["complete"]
    if "missing" in answer:
        missing = []
        for i, entry in enumerate(_list(answer["missing"], "missing", MAX_VISITED)):
            if not isinstance(entry, dict):
                raise _fail(f"missing[{i}] is not an object")
            missing.append({"peer": _text(entry.get("peer"), f"missing[{i}].peer", MAX_ADDRESS),
                            "why": _text(entry.get("why"), f"missing[{i}].why", MAX_REASON)})  # fmt: skip
        clean["missing"] = missing


def _entries(answer: dict, field: str):
    """(key, entry) for each object in answer[field], a list of at most MAX_RESULTS objects."""
    for i, raw in enumerate(_list(answer.get(field, []), field, MAX_RESULTS)):
        if not isinstance(raw, dict):
            raise _fail(f"{field}[{i}] is not an object")
        yield f"{field}[{i}]", raw


def _holder(raw: dict, key: str, name_field: str, me: str) -> dict:
    """A peer holding a file, as answers name it; a claim to be this peer (me) is a lie."""
    name = _peer(raw.get(name_field), f"{key}.{name_field}")
    if name == me:
        raise BadAnswer(IMPERSONATION, f"{key} claims to come from this peer ({me})")
    return {
        name_field: name,
        "rest_url": _text(raw.get("rest_url"), f"{key}.rest_url", MAX_ADDRESS),
        "grpc_address": _field(raw.get("grpc_address"), f"{key}.grpc_address", grpc_address_problem),
        "size": _field(raw.get("size"), f"{key}.size", size_problem),
        "sha256": _sha(raw.get("sha256"), f"{key}.sha256"),
    }


def search_answer(answer: Any, me: str) -> dict:
    """A remote /search answer, checked: {"results", "visited", "messages"} (+ "complete")."""
    if not isinstance(answer, dict):
        raise _fail("the answer is not a JSON object")
    results = [
        {"file": _file(raw.get("file"), f"{key}.file"), **_holder(raw, key, "peer", me)}
        for key, raw in _entries(answer, "results")
    ]
    # who handled the query: names (or addresses) for display and counting, bounded in number and length
    visited = [_text(v, "visited[]", MAX_ADDRESS) for v in _list(answer.get("visited", []), "visited", MAX_VISITED)]
    clean = {
        "results": results,
        "visited": visited,
        "messages": _int(answer.get("messages", 0), "messages", MAX_MESSAGES),
    }
    _missing(answer, clean)
    if "knows" in answer:  # peers' ask orders, for the origin's plans (peer_app/hops.py)
        try:
            clean["knows"] = parse_knows(answer["knows"])
        except ValueError as err:
            raise _fail(str(err)) from None
    return clean


def locate_answer(answer: Any, me: str) -> dict:
    """A remote /locate answer, checked: {"peers": [holder...], "via": [names]}."""
    if not isinstance(answer, dict):
        raise _fail("the answer is not a JSON object")
    holders = []
    for key, raw in _entries(answer, "peers"):
        holder = _holder(raw, key, "name", me)
        if "blake3" in raw:  # the lane's digest (docs/protocol.md), checked like the sha256
            holder["blake3"] = _sha(raw["blake3"], f"{key}.blake3")
        if "mtime" in raw:
            holder["mtime"] = _field(raw["mtime"], f"{key}.mtime", mtime_problem)
        holders.append(holder)
    via = [_text(v, "via[]", MAX_ADDRESS) for v in _list(answer.get("via", []), "via", MAX_VISITED)]
    clean = {"peers": holders, "via": via}
    _missing(answer, clean)
    return clean


def checker(
    me: str,
    on_drop: Callable[[str], None] = lambda reason: None,
    base: Callable[[str, Any], Any] = lambda route, answer: answer,
) -> Callable[[str, Any], dict]:
    """Discovery's check for peer me: each remote answer cleaned, or dropped (on_drop(reason), then BadAnswer).

    base (search.check_answer: what discovery itself needs, e.g. `complete`) runs on the cleaned answer.
    """

    def check(route: str, answer: Any) -> dict:
        try:
            if route == "/search":
                return base(route, search_answer(answer, me))
            if route == "/locate":
                return base(route, locate_answer(answer, me))
        except BadAnswer as err:
            on_drop(err.reason)
            log.info("dropped a remote %s answer: %s", route, err)
            raise
        except ValueError as err:
            on_drop(MALFORMED)
            log.info("dropped a remote %s answer: %s", route, err)
            raise
        return answer

    return check
