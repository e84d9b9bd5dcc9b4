"""The client library's REST side: one JSON call, the Maestro and a peer as seen from a client.

Used by the CLI, by the tests and by peers themselves (registration, bootstrap, discovery).
Every call has a timeout; every failure comes back as the P2PError the server named.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from common.credentials import NONE, Credentials
from common.errors import Busy, NoAnswer, P2PError, TimedOut, Unavailable, from_http_error

if TYPE_CHECKING:  # requests is imported on first use: a peer's REST workers rarely need it (~6 MiB each)
    import requests

_local = threading.local()


def session() -> requests.Session:
    """A keep-alive HTTP session per thread."""
    s = getattr(_local, "session", None)
    if s is None:
        from common.http import new_session

        s = _local.session = new_session()
    return s


def call(method: str, url: str, *, timeout: float, credentials: Credentials = NONE, **kwargs: Any) -> dict:
    """Make one JSON HTTP call presenting credentials; raise the matching P2PError on any failure."""
    import requests

    if credentials.token:
        kwargs["headers"] = {**kwargs.get("headers", {}), **credentials.headers}
    try:
        resp = session().request(method, url, timeout=timeout, verify=credentials.verify, **kwargs)
    except requests.exceptions.SSLError:
        raise Unavailable(f"{url}: TLS failed (is its certificate from this network's CA?)") from None
    except requests.Timeout:
        raise TimedOut(f"{url} did not answer within {timeout:g}s") from None
    except requests.RequestException as err:
        raise NoAnswer(f"cannot reach {url}: {why(err)}") from None
    except OSError:  # requests could not load the CA file: the same error as everywhere else
        credentials.roots()
        raise
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        if isinstance(body, dict) and "error" in body:
            raise from_http_error(body)
        # Not a p2pnet answer (a proxy, another program on that port, a gateway error).
        kind = Unavailable if resp.status_code in (502, 503, 504) else P2PError
        raise kind(
            f"{url} answered HTTP {resp.status_code} {resp.reason or ''} without a p2pnet error; is it a p2pnet node?"
        )
    if not isinstance(body, dict):
        raise Unavailable(f"{url} answered something that is not a JSON object")
    return body


def why(err: BaseException) -> str:
    """Why a connection failed, in a person's words ("connection refused"), not an exception's class name.

    requests' own errors are looked for only where requests is loaded (the CLI): a node's lean
    client never loads it, and a friend that does not answer must not cost the node ~7 MiB.
    """
    requests = sys.modules.get("requests")
    if requests is not None:
        if isinstance(err, (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
            return "not an http:// URL"
        if isinstance(err, requests.exceptions.InvalidURL):
            return "not a valid URL"
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        nested = getattr(cause, "reason", None)  # urllib3 keeps the cause of a failed retry here
        if not isinstance(nested, BaseException):
            nested = next((a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)), None)
        cause = nested or cause.__cause__ or cause.__context__
    return type(err).__name__


def rest_transport(credentials: Credentials = NONE) -> Callable[[str, str, dict, float], dict]:
    """Keep-alive GETs to url + route with params, presenting credentials: how peers ask each other."""
    credentials.roots()  # a CA file it cannot read: Unavailable naming it, as for every other caller
    hops = HopClient(headers=credentials.headers, ca_file=credentials.ca_file)

    def transport(url: str, route: str, params: dict, timeout: float) -> dict:
        return hops.get(url + route, params, timeout)

    transport.abandon = hops.abandon  # type: ignore[attr-defined]  # discovery cuts the hops of a flood nobody awaits
    return transport


_node_clients: dict[Credentials, HopClient] = {}
_node_clients_lock = threading.Lock()


def node_client(credentials: Credentials) -> HopClient:
    """The lean client a node (a peer's agent, its REST app) calls the Maestro and its friends with.

    One per credential and process. requests (what the CLI uses) would cost a peer's gRPC process
    ~9 MiB for one heartbeat every few seconds.
    """
    with _node_clients_lock:
        client = _node_clients.get(credentials)
        if client is None:
            client = _node_clients[credentials] = HopClient(headers=credentials.headers, ca_file=credentials.ca_file)
        return client


class _Service:
    """A REST server of the network at url, called with one timeout and one set of credentials.

    node: called by a node of the network (node_client), not by the CLI (requests).
    """

    def __init__(self, url: str, timeout: float, credentials: Credentials = NONE, *, node: bool = False) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.credentials = credentials
        self.node = node

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        if self.node:
            client = node_client(self.credentials)
            return client.request(method, self.url + path, kwargs.get("params"), kwargs.get("json"), self.timeout)
        return call(method, self.url + path, timeout=self.timeout, credentials=self.credentials, **kwargs)


class Maestro(_Service):
    """The central directory, seen from a client."""

    def __init__(self, url: str, timeout: float = 5.0, credentials: Credentials = NONE, *, node: bool = False) -> None:
        super().__init__(url, timeout, credentials, node=node)

    def register(self, payload: dict) -> dict:
        return self._call("POST", "/register", json=payload)

    def heartbeat(self, name: str) -> dict:
        return self._call("POST", "/heartbeat", json={"name": name})

    def locate(self, filename: str) -> dict:
        return self._call("GET", "/locate", params={"file": filename})

    def peers(self) -> list[dict]:
        return self._call("GET", "/peers")["peers"]


class Peer(_Service):
    """A peer's REST API, seen from a client."""

    def __init__(self, url: str, timeout: float = 10.0, credentials: Credentials = NONE, *, node: bool = False) -> None:
        super().__init__(url, timeout, credentials, node=node)

    def info(self, **params: Any) -> dict:
        return self._call("GET", "/info", params=params)

    def locate(self, filename: str, **params: Any) -> dict:
        return self._call("GET", "/locate", params={"file": filename, **params})

    def search(self, query: str, **params: Any) -> dict:
        return self._call("GET", "/search", params={"query": query, **params})

    def register(self, payload: dict) -> dict:
        return self._call("POST", "/register", json=payload)


class _Retry(Exception):
    """A reused keep-alive connection was closed by the peer: try once more on a fresh one."""


class HopClient:
    """Keep-alive JSON GETs from a peer to other peers: the path every search and locate hop takes.

    Plain http.client over a small pool of open connections per peer: about a third of the CPU
    of a requests call, which is most of what a flood costs (a search on a 10-peer ring makes
    some 16 of these). Thread- and greenlet-safe; under gevent the sockets yield while waiting.
    Failures come back as the P2PError the server named, or Unavailable.
    """

    STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)
    MAX_ANSWER = 16 * 1024 * 1024  # bytes of one answer read at most: a hostile friend cannot fill our memory

    def __init__(
        self,
        *,
        max_idle: int = 16,
        max_idle_age: float = 0.8,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        # with a CA (security.tls), peers are https:// and verified against it
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.max_idle = max_idle  # idle connections kept per peer
        self.max_idle_age = max_idle_age  # below the servers' keep-alive (1 s): never reuse one they closed
        self.headers = {"Accept": "application/json", **(headers or {})}
        self._idle: dict[tuple[str, int], deque[tuple[http.client.HTTPConnection, float]]] = {}
        # query id -> its calls under way; a connection is in here or in _idle, never both (the
        # lock moves it), so abandon() cannot reach one another query took from the pool
        self._flying: dict[str, set[http.client.HTTPConnection]] = {}
        self._cut: set[http.client.HTTPConnection] = set()  # connections abandon() cut, until their call ends
        self._lock = threading.Lock()

    def abandon(self, qids: set[str]) -> None:
        """Cut the calls under way for these query ids: their peers see us hang up and stop too."""
        with self._lock:  # a shutdown never blocks; under the lock no connection changes hands meanwhile
            for conn in [c for q in qids for c in self._flying.get(q, ())]:
                self._cut.add(conn)
                if conn.sock is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)

    def _fly(self, qid: str | None, conn: http.client.HTTPConnection, on: bool) -> bool:
        """Track conn as under way for qid (on) or not any more; return whether abandon() cut it."""
        with self._lock:
            if on:
                self._flying.setdefault(str(qid), set()).add(conn)
                return False
            return self._land(qid, conn)

    def _land(self, qid: str | None, conn: http.client.HTTPConnection) -> bool:
        """(Under the lock) conn is no longer under way for qid; return whether abandon() cut it.

        Nothing when it had landed already: by then it may be under way for another query.
        """
        flying = self._flying.get(str(qid))
        if flying is None or conn not in flying:
            return False
        flying.discard(conn)
        if not flying:
            del self._flying[str(qid)]
        if conn in self._cut:
            self._cut.discard(conn)
            return True
        return False

    def get(self, url: str, params: dict, timeout: float) -> dict:
        """GET url?params; the JSON object answered, or raise the matching P2PError."""
        return self.request("GET", url, params, None, timeout)

    def request(self, method: str, url: str, params: dict | None, payload: object, timeout: float) -> dict:
        """METHOD url?params with payload as a JSON body (unless None); the JSON object answered, or a P2PError."""
        params = params or {}
        body = None if payload is None else json.dumps(payload).encode()
        parts = urlsplit(url)
        scheme = "https" if self._tls else "http"
        if parts.scheme != scheme or not parts.hostname:
            raise NoAnswer(f"cannot reach {url}: this network's peers are {scheme}://")
        key = (parts.hostname, parts.port or (443 if self._tls else 80))
        target = (parts.path or "/") + ("?" + urlencode(params) if params or method == "GET" else "")
        qid = params.get("qid")
        for attempt in (0, 1):
            conn, reused = self._checkout(key, timeout)
            if qid is not None:
                self._fly(qid, conn, True)
            try:
                return self._exchange(method, url, key, target, body, conn, reused and attempt == 0, timeout, qid)
            except _Retry:
                if qid is not None and self._fly(qid, conn, False):
                    qid = None
                    raise Busy(f"{url}: the flood was abandoned (its caller hung up)") from None
                continue
            except P2PError:
                if qid is not None and self._fly(qid, conn, False):
                    qid = None
                    raise Busy(f"{url}: the flood was abandoned (its caller hung up)") from None
                raise
            finally:
                if qid is not None:
                    self._fly(qid, conn, False)
        raise AssertionError("unreachable")

    def _exchange(
        self,
        method: str,
        url: str,
        key: tuple[str, int],
        target: str,
        body: bytes | None,
        conn: http.client.HTTPConnection,
        retry: bool,
        timeout: float,
        qid: str | None = None,
    ) -> dict:
        """One request and its answer on conn; _Retry when a reused connection turned out closed."""
        try:
            if conn.sock is None:
                try:
                    conn.connect()
                except TimeoutError:  # no SYN-ACK in time: the host is gone or cut off, not busy
                    conn.close()
                    raise NoAnswer(f"cannot reach {url}: connect timed out after {timeout:g}s") from None
            headers = self.headers if body is None else {**self.headers, "Content-Type": "application/json"}
            conn.request(method, target, body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(self.MAX_ANSWER + 1)
        except self.STALE:
            conn.close()
            if retry:  # the peer closed an idle connection: once more on a fresh one
                raise _Retry from None
            raise NoAnswer(f"cannot reach {url}: connection closed") from None
        except TimeoutError:
            conn.close()
            raise TimedOut(f"{url} did not answer within {timeout:g}s") from None
        except OSError as err:
            conn.close()
            raise NoAnswer(f"cannot reach {url}: {why(err)}") from None
        except http.client.HTTPException:  # IncompleteRead and kin: the peer went away mid-answer
            conn.close()
            raise NoAnswer(f"cannot reach {url}: its answer was cut halfway") from None
        if len(data) > self.MAX_ANSWER:  # no peer's answer is this big (answers are capped at 1,000 results)
            conn.close()
            raise Unavailable(f"{url} answered more than {self.MAX_ANSWER >> 20} MiB; not a p2pnet answer")
        if resp.length:  # fewer bytes than its Content-Length said: the peer went away mid-answer
            conn.close()
            raise NoAnswer(f"cannot reach {url}: its answer was cut halfway")
        if resp.will_close:
            conn.close()
        else:
            self._checkin(key, conn, qid)
        return self._decode(url, resp.status, data)

    @staticmethod
    def _decode(url: str, status: int, data: bytes) -> dict:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if status >= 400:
            raise from_http_error(body, data[:200].decode("utf-8", "replace"))
        if not isinstance(body, dict):
            raise Unavailable(f"{url} answered something that is not a JSON object")
        return body

    def _checkout(self, key: tuple[str, int], timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to key younger than the servers' keep-alive, else a new one."""
        now = time.monotonic()
        conn = None
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                candidate, since = idle.pop()
                if now - since < self.max_idle_age:
                    conn = candidate
                    break
                candidate.close()  # the server has closed it (or is about to)
        if conn is None:
            if self._tls is not None:
                return http.client.HTTPSConnection(key[0], key[1], timeout=timeout, context=self._tls), False
            return http.client.HTTPConnection(key[0], key[1], timeout=timeout), False
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True

    def _checkin(self, key: tuple[str, int], conn: http.client.HTTPConnection, qid: str | None = None) -> None:
        """conn back to the pool, and off qid's calls under way in the same step (closed if abandon() cut it)."""
        with self._lock:
            cut = qid is not None and self._land(qid, conn)
            idle = self._idle.setdefault(key, deque())
            if not cut and len(idle) < self.max_idle:
                idle.append((conn, time.monotonic()))
                return
        conn.close()
