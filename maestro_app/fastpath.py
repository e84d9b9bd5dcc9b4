"""A WSGI fast path for the Maestro's hottest request: a /locate that finds live holders.

Flask's request and response machinery costs about two thirds of a /locate's CPU; the
benchmark (bench/discovery.py) asks for thousands per second on two cores. This layer
answers only the plain success case, GET /locate?file=NAME with NAME a valid name that
live peers hold, with the same JSON body as the Flask view and the same metrics. Every
other request, and every /locate that would not be a 200 (missing, bad or unknown name,
non-ASCII query, a Host this node does not answer to, a browser's cross-site request, a caller
the guard refuses), goes to Flask untouched, so validation and error answers stay in one place.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

from common.browsers import HostCheck, cross_site
from common.errors import P2PError, Unauthorized
from common.local_owner import ConnectionOwners
from common.metrics import Metrics
from common.names import check_name
from common.security import READ, Guard
from common.web import MAX_PARAM_LENGTH
from maestro_app.directory import Directory

_HEADERS = "application/json"


class LocateFastPath:
    """WSGI middleware in front of the Maestro's Flask app."""

    def __init__(
        self, app, directory: Directory, metrics: Metrics, guard: Guard, hosts: HostCheck, owners: ConnectionOwners
    ) -> None:
        self.app = app
        self.directory = directory
        self.metrics = metrics
        self.guard = guard
        self.hosts = hosts
        self.owners = owners

    def _allowed(self, environ) -> bool:
        """Whether Flask's checks would let this read through (common.web: Host, cross-site, the guard)."""
        if not self.hosts.accepts(environ.get("HTTP_HOST")):
            return False
        origin, site = environ.get("HTTP_ORIGIN"), environ.get("HTTP_SEC_FETCH_SITE")
        if (origin is not None or site is not None) and cross_site(
            "GET",
            environ.get("wsgi.url_scheme", "http"),
            environ.get("HTTP_HOST"),
            origin,
            site,
            environ.get("HTTP_SEC_FETCH_MODE"),
            environ.get("HTTP_SEC_FETCH_DEST"),
        ):
            return False
        if not self.guard.needs_credential(READ):
            return True
        try:
            self.guard.caller(
                environ.get("REMOTE_ADDR"),
                environ.get("HTTP_AUTHORIZATION"),
                lambda: self.owners.of(environ.get("gunicorn.socket")),
            )
        except Unauthorized:
            return False  # Flask answers the refusal, in one place
        return True

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/locate" and environ.get("REQUEST_METHOD") == "GET" and self._allowed(environ):
            start = time.perf_counter()
            body = self._answer(environ.get("QUERY_STRING", ""))
            if body is not None:
                start_response("200 OK", [("Content-Type", _HEADERS), ("Content-Length", str(len(body)))])
                self.metrics.observe_request("/locate", "GET", 200, time.perf_counter() - start)
                return [body]
        return self.app(environ, start_response)

    def _answer(self, query: str) -> bytes | None:
        """The 200 body for this query string, or None to let Flask answer."""
        if not query.isascii() or len(query) > 3 * MAX_PARAM_LENGTH:
            return None
        values = parse_qs(query).get("file")
        if not values or len(values[0]) > MAX_PARAM_LENGTH:
            return None
        try:
            name = check_name(values[0])
        except P2PError:
            return None
        holders = self.directory.locate(name)
        if not holders:
            return None
        # Byte for byte what Flask's jsonify sends: compact, ASCII, keys in order, a newline.
        return (json.dumps({"file": name, "peers": holders}, separators=(",", ":")) + "\n").encode()
