"""The client library's REST side: one JSON call, the Maestro and a peer as seen from a client.

Used by the CLI, by the tests and by peers themselves (registration, bootstrap, discovery).
Every call has a timeout; every failure comes back as the P2PError the server named.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from common.errors import NoAnswer, Unavailable, from_http_error
from common.http import new_session

_local = threading.local()


def session() -> requests.Session:
    """A keep-alive HTTP session per thread."""
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = new_session()
    return s


def call(method: str, url: str, *, timeout: float, **kwargs: Any) -> dict:
    """Make one JSON HTTP call; raise the matching P2PError on any failure."""
    try:
        resp = session().request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout:
        raise NoAnswer(f"{url} did not answer within {timeout:g}s") from None
    except requests.RequestException as err:
        raise NoAnswer(f"cannot reach {url}: {type(err).__name__}") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        raise from_http_error(body, resp.text[:200])
    if not isinstance(body, dict):
        raise Unavailable(f"{url} answered something that is not a JSON object")
    return body


class Maestro:
    """The central directory, seen from a client."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def register(self, payload: dict) -> dict:
        return call("POST", f"{self.url}/register", json=payload, timeout=self.timeout)

    def heartbeat(self, name: str) -> dict:
        return call("POST", f"{self.url}/heartbeat", json={"name": name}, timeout=self.timeout)

    def locate(self, filename: str) -> dict:
        return call("GET", f"{self.url}/locate", params={"file": filename}, timeout=self.timeout)

    def peers(self) -> list[dict]:
        return call("GET", f"{self.url}/peers", timeout=self.timeout)["peers"]


class Peer:
    """A peer's REST API, seen from a client."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def info(self) -> dict:
        return call("GET", f"{self.url}/info", timeout=self.timeout)

    def locate(self, filename: str, **params: Any) -> dict:
        return call("GET", f"{self.url}/locate", params={"file": filename, **params}, timeout=self.timeout)

    def search(self, query: str, **params: Any) -> dict:
        return call("GET", f"{self.url}/search", params={"query": query, **params}, timeout=self.timeout)

    def register(self, payload: dict) -> dict:
        return call("POST", f"{self.url}/register", json=payload, timeout=self.timeout)
