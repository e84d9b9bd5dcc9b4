"""The live page (docs/operations.md): `GET /ui`, its static files, and the search it sends through a peer.

The page is plain HTML/JS/SVG in maestro_app/static/ (no build step). It talks to the Maestro
only, same origin: it polls `/peers` and `/directory`, and searches through `/ui/search`, which
asks one live peer's `/search` on the page's behalf. So the browser never calls a peer (no
cross-origin requests, no CORS headers to open), and the Maestro only ever forwards to the
REST URL a registered peer gave, never to an address the caller names.
"""

from __future__ import annotations

import random
from pathlib import Path

from flask import Blueprint, current_app, jsonify, send_from_directory

from client.api import Peer
from common.errors import NotFound, Unavailable
from common.web import arg_str
from maestro_app.directory import Directory

STATIC = str(Path(__file__).resolve().parent / "static")  # the page's files
bp = Blueprint("ui", __name__, static_folder=STATIC, static_url_path="/ui/static")

# Everything from this origin, nothing from anywhere else: the machines are offline, and a
# file name a peer registered can never pull in a script or an image from outside.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_RESULTS = 1000  # search results passed on to the page


def directory() -> Directory:
    return current_app.extensions["directory"]


@bp.get("/ui")
def page():
    resp = send_from_directory(STATIC, "index.html", max_age=0)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.after_request
def _headers(resp):
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def _pick(peers: list[dict], name: str | None) -> dict:
    """The peer to search from: the one named, or any live one."""
    if name:
        peer = next((p for p in peers if p["name"] == name), None)
        if peer is None:
            raise NotFound(f"no peer named {name!r} is registered")
        if not peer["alive"]:
            raise Unavailable(f"{name} is not alive (last heard {peer['age']:.0f}s ago); pick a live peer")
        return peer
    alive = [p for p in peers if p["alive"]]
    if not alive:
        raise Unavailable("no live peer to search from; is the network up? (python launcher.py status)")
    return random.choice(alive)


@bp.get("/ui/search")
def search():
    """Flood-search the network from one peer; the peer's answer plus `from` (who was asked)."""
    settings = current_app.config["NODE"].settings
    query = arg_str("query", max_length=settings.max_query_length)
    peer = _pick(directory().peers(), arg_str("peer", required=False, max_length=64))
    timeout = settings.search_timeout + settings.request_timeout
    try:
        answer = Peer(peer["rest_url"], timeout, current_app.extensions["read_credentials"], node=True).search(query)
    except Unavailable as err:
        raise Unavailable(f"{peer['name']} did not answer the search: {err.detail}") from None
    results = [r for r in answer.get("results", []) if isinstance(r, dict)]
    visited = [v for v in answer.get("visited", []) if isinstance(v, str)]
    return jsonify(
        {
            "from": peer["name"],
            "query": query,
            "results": results[:MAX_RESULTS],
            "truncated": len(results) > MAX_RESULTS,
            "visited": visited,
            "messages": answer.get("messages", 0),
            "complete": answer.get("complete"),
        }
    )
