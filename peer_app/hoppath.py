"""The search request, parsed once for both ways in: Flask's view and the lean WSGI path for hops.

A flood makes one request per peer it reaches, nearly all of them hops from other peers. Flask's
request and response machinery is most of what such a request costs; HopFastPath answers a hop
(`GET /search` with a `qid`, from a peer that proved who it is: hops.hop_sender) in plain WSGI
with the same answer as the view. Everything else, and any hop that would not be a 200, goes
to Flask untouched, so validation and error answers stay in one place.
"""

from __future__ import annotations

import _socket
import json
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from common.config import Settings
from common.errors import P2PError
from common.metrics import Metrics
from common.web import RequestCheck, arg_float, arg_int, arg_str
from peer_app.hops import hop_fields, hop_sender
from peer_app.search import Discovery, Query, new_qid

_PEEK = _socket.MSG_PEEK | _socket.MSG_DONTWAIT


def caller_gone(environ: Mapping) -> Callable[[], bool]:
    """Whether the client of this WSGI request has hung up (its socket reads end-of-stream).

    A look without reading or waiting (MSG_PEEK | MSG_DONTWAIT on the raw descriptor, so it
    neither yields under gevent nor takes a pipelined next request's bytes). Without a socket
    (a test client), never.
    """
    sock = environ.get("gunicorn.socket")
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return lambda: False

    def gone() -> bool:
        try:
            fd = fileno()
            if fd < 0:
                return True
            raw = _socket.socket(fileno=fd)
        except OSError:
            return True
        try:
            return raw.recv(1, _PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        finally:
            raw.detach()

    return gone


def search_query(
    args: Mapping[str, str], settings: Settings, sender: str | None, gone: Callable[[], bool] = lambda: False
) -> Query:
    """The search a request asks for; BadRequest when a parameter is wrong.

    A user's request (sender None) starts a new search: a fresh id, whatever it sent as hop
    fields (a query id chosen in advance could make peers drop the search as a duplicate).
    """
    limit = settings.max_query_length
    # `q` is the classic spelling (`/search?q=foo`, docs/api.md); `query` is the documented one.
    text = arg_str("query", required=False, max_length=limit, args=args) or arg_str("q", max_length=limit, args=args)
    hop = hop_fields(args, sender)
    return Query(
        text=str(text),
        qid=hop.qid or new_qid(),
        ttl=arg_int("ttl", default=settings.search_default_ttl, minimum=0, maximum=settings.search_max_ttl, args=args),
        fanout=arg_int(
            "fanout",
            default=settings.search_default_fanout,
            minimum=0,
            maximum=settings.search_max_fanout,
            args=args,
        ),
        budget=arg_float("budget", default=settings.search_timeout, maximum=settings.search_timeout, args=args),
        reached=list(hop.reached),
        plan=hop.plan,
        hop=hop.sender is not None,
        learn=hop.learn,
        gone=gone,
    )


def count(metrics: Metrics, answer: dict) -> None:
    """The search counters for one answer (p2p_search_*)."""
    (metrics.search_duplicates if answer["duplicate"] else metrics.search_handled).inc()
    if not answer["complete"]:
        metrics.search_incomplete.inc()


class HopFastPath:
    """WSGI middleware in front of a peer's Flask app: search hops from peers, without Flask."""

    def __init__(self, app, discovery: Discovery, metrics: Metrics, check: RequestCheck, settings: Settings) -> None:
        self.app = app
        self.discovery = discovery
        self.metrics = metrics
        self.check = check  # the same check Flask makes (common.web): a refusal is Flask's to answer
        self.guard = check.guard
        self.settings = settings

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/search" and environ.get("REQUEST_METHOD") == "GET":
            start = time.perf_counter()
            body = self._answer(environ)
            if body is not None:
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                self.metrics.observe_request("/search", "GET", 200, time.perf_counter() - start)
                return [body]
        return self.app(environ, start_response)

    def _answer(self, environ) -> bytes | None:
        """The 200 body of a hop, or None to let Flask answer (a user's search, anything refused)."""
        raw = environ.get("QUERY_STRING", "")
        if "qid=" not in raw or not raw.isascii():
            return None
        sender = hop_sender(self.guard, environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION"))
        if sender is None:
            return None
        try:
            self.check(environ)
            args = dict(parse_qsl(raw, keep_blank_values=True)[::-1])  # the first value wins, as in Flask
            query = search_query(args, self.settings, sender, caller_gone(environ))
        except P2PError:
            return None
        if not query.hop:
            return None
        answer = self.discovery.search(query)
        count(self.metrics, answer)
        # What Flask's jsonify sends for the view's answer: compact, keys in order, a newline.
        return (json.dumps({"query": query.text, **answer}, separators=(",", ":")) + "\n").encode()
