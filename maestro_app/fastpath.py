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

from common.errors import P2PError
from common.green import take_turns
from common.metrics import Metrics
from common.names import check_name
from common.web import MAX_PARAM_LENGTH, RequestCheck
from maestro_app.directory import Directory

_HEADERS = "application/json"


class LocateFastPath:
    """WSGI middleware in front of the Maestro's Flask app."""

    def __init__(self, app, directory: Directory, metrics: Metrics, check: RequestCheck) -> None:
        self.app = app
        self.directory = directory
        self.metrics = metrics
        self.check = check  # the same check Flask makes (common.web): a refusal is Flask's to answer

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/locate" and method == "GET" and self.check.allows(environ):
            start = time.perf_counter()
            body = self._answer(environ.get("QUERY_STRING", ""))
            if body is not None:
                start_response("200 OK", [("Content-Type", _HEADERS), ("Content-Length", str(len(body)))])
                self.metrics.observe_request("/locate", "GET", 200, time.perf_counter() - start)
                take_turns()
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
