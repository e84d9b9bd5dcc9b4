"""A whole network of Discovery objects in one process, wired through a fake transport."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

from common.errors import NoAnswer, NotFound, TimedOut
from peer_app.hops import hop_fields
from peer_app.search import Discovery, Gate, Query
from peer_app.state import KnownPeers, SeenQueries, open_db


class FakeNetwork:
    """Peers named by URL; calls go straight to their Discovery, like HTTP would.

    `dead` peers refuse connections; `slow` peers take that many seconds before answering
    (and, like a real HTTP client, the caller gives up after its timeout).
    """

    def __init__(self, tmp: Path, files: dict[str, list[str]] | None = None, prune_after: int = 3) -> None:
        self.tmp = tmp
        self.files = files or {}
        self.prune_after = prune_after
        self.peers: dict[str, Discovery] = {}
        self.dead: set[str] = set()
        self.slow: dict[str, float] = {}
        self.garbled: set[str] = set()  # peers whose answers are not what a peer answers
        self.calls: list[tuple[str, str, dict]] = []  # (url, route, params) of every message
        self.timeouts: list[tuple[str, float]] = []  # (url, the caller's timeout) of every message
        self.handled: list[str] = []  # names that handled a query the first time
        self._lock = threading.Lock()
        self.pool = futures.ThreadPoolExecutor(max_workers=64)

    @staticmethod
    def url(name: str) -> str:
        return f"http://{name}.test:80"

    def add(self, name: str, friends: Sequence[str] = (), gate: Gate | None = None) -> Discovery:
        db = open_db(str(self.tmp / f"{name}.sqlite3"))
        known = KnownPeers(db, prune_after=self.prune_after, self_url=self.url(name))
        for role, friend in zip(("primary", "backup"), friends, strict=False):
            known.add(self.url(friend), friend, role=role)
        me = {"name": name, "url": self.url(name), "grpc_address": f"{name}.test:81"}
        files = [{"name": f, "size": len(f), "sha256": "0" * 64} for f in self.files.get(name, [])]
        peer = Discovery(
            me, lambda: files, known, SeenQueries(db), self.transport, request_timeout=2.0, pool=self.pool, gate=gate
        )
        self.peers[self.url(name)] = peer
        return peer

    @classmethod
    def ring(cls, tmp: Path, n: int, files: dict[str, list[str]] | None = None, **kw) -> FakeNetwork:
        """Peers p0..p{n-1}; p{i} has friends p{i+1} (primary) and p{i+2} (backup)."""
        net = cls(tmp, files, **kw)
        for i in range(n):
            net.add(f"p{i}", [f"p{(i + 1) % n}", f"p{(i + 2) % n}"])
        return net

    def __getitem__(self, name: str) -> Discovery:
        return self.peers[self.url(name)]

    def transport(self, url: str, route: str, params: dict, timeout: float) -> dict:
        with self._lock:
            self.calls.append((url, route, dict(params)))
            self.timeouts.append((url, timeout))
        if url in self.dead or url not in self.peers:
            raise NoAnswer(f"cannot reach {url}")  # refused: nothing answered
        delay = self.slow.get(url, 0.0)
        if delay:
            time.sleep(min(delay, timeout))
            if delay > timeout:
                raise TimedOut(f"{url} did not answer within {timeout:g}s")
        peer = self.peers[url]
        if url in self.garbled:
            return {"results": "none", "visited": 3}
        hop = hop_fields({k: str(v) for k, v in params.items()}, "peer")
        if route == "/search":
            answer = peer.search(
                Query(
                    params["query"],
                    params["qid"],
                    int(params["ttl"]),
                    int(params["fanout"]),
                    float(params["budget"]),
                    list(hop.reached),
                    plan=hop.plan,
                    hop=True,
                    learn=hop.learn,
                )
            )
            if not answer["duplicate"]:
                with self._lock:
                    self.handled.append(peer.me["name"])
            return answer
        if route == "/locate":
            return peer.locate(
                params["file"],
                qid=params["qid"],
                ttl=int(params["ttl"]),
                budget=float(params["budget"]),
                reached=list(hop.reached),
                hop=True,
            )
        raise NotFound(route)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
