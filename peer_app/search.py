"""Discovery without the Maestro: Gnutella-style flood search and friend-chain locate.

Transport-agnostic: a Transport is any callable (url, path, params, timeout) -> dict that
raises P2PError on failure, so tests can run a whole network of these in one process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

from common.errors import NoAnswer, NotFound, P2PError
from peer_app.state import KnownPeers, SeenQueries

Transport = Callable[[str, str, dict, float], dict]
HOP_MARGIN = 0.05  # seconds a hop keeps for itself to answer its caller
HOP_SHRINK = 0.85  # each hop passes on this fraction of what it has left


def new_qid() -> str:
    return uuid.uuid4().hex


@dataclass
class Query:
    """One search as it travels: text, id, hops left, fanout, time left, peers already on the path."""

    text: str
    qid: str
    ttl: int
    fanout: int
    budget: float
    path: list[str] = field(default_factory=list)

    def child_budget(self, elapsed: float) -> float:
        return max(0.0, (self.budget - elapsed - HOP_MARGIN) * HOP_SHRINK)


class Discovery:
    """Answers /search and /locate for one peer."""

    def __init__(
        self,
        me: dict,
        local_files: Callable[[], list[dict]],
        known: KnownPeers,
        seen: SeenQueries,
        transport: Transport,
        *,
        request_timeout: float,
        pool: futures.Executor,
        clock: Callable[[], float] = time.monotonic,
        local_file: Callable[[str], dict | None] | None = None,
    ) -> None:
        self.me = me  # {"name", "url", "grpc_address"}
        self.local_files = local_files
        # An exact lookup for /locate; without one, pick the name out of the full listing.
        self.local_file = local_file or (lambda name: next((f for f in local_files() if f["name"] == name), None))
        self.known = known
        self.seen = seen
        self.transport = transport
        self.request_timeout = request_timeout
        self.pool = pool
        self.clock = clock

    def _holder(self, f: dict) -> dict:
        """This peer as a holder of file f, shaped like a Maestro /locate entry."""
        return {
            "name": self.me["name"],
            "rest_url": self.me["url"],
            "grpc_address": self.me["grpc_address"],
            "size": f["size"],
            "sha256": f["sha256"],
            "blake3": f.get("blake3", ""),
        }

    def _hit(self, f: dict) -> dict:
        """A search result: the file and its owner."""
        return {
            "file": f["name"],
            "peer": self.me["name"],
            "rest_url": self.me["url"],
            "grpc_address": self.me["grpc_address"],
            "size": f["size"],
            "sha256": f["sha256"],
        }

    def _targets(self, path: list[str], limit: int) -> list[dict]:
        """Known peers not yet on the path and not marked down, friends first."""
        on_path = set(path)
        picked = [p for p in self.known.reachable() if p["url"] not in on_path and (p["name"] or "") not in on_path]
        return picked[:limit]

    def search(self, q: Query) -> dict:
        """Match locally, then flood to up to fanout peers with ttl-1; merge without duplicates."""
        start = self.clock()
        if not self.seen.first_time(q.qid):
            return {"qid": q.qid, "duplicate": True, "results": [], "visited": [], "messages": 0}
        text = q.text.lower()
        results = [self._hit(f) for f in self.local_files() if text in f["name"].lower()]
        visited, messages = [self.me["name"]], 0
        if q.ttl > 1 and q.fanout > 0:
            path = q.path + [self.me["name"], self.me["url"]]
            budget = min(q.child_budget(self.clock() - start), self.request_timeout)
            targets = self._targets(path, q.fanout)
            # The targets' siblings travel in the path too: a target must not forward to a peer
            # we ask ourselves, or its copy (with one hop less) could arrive first and the
            # duplicate check would then drop ours, shortening the query's reach.
            path += [t[key] for t in targets for key in ("name", "url") if t[key]]
            params = {
                "query": q.text,
                "qid": q.qid,
                "ttl": q.ttl - 1,
                "fanout": q.fanout,
                "budget": f"{budget:.3f}",
                "path": ",".join(path),
            }
            for _peer, answer in self._ask_all(targets, "/search", params, budget):
                messages += 1
                if answer is not None:
                    results.extend(answer.get("results", []))
                    visited.extend(answer.get("visited", []))
                    messages += answer.get("messages", 0)
        unique = {(r.get("peer"), r.get("file")): r for r in results if isinstance(r, dict)}
        return {
            "qid": q.qid,
            "duplicate": False,
            "results": list(unique.values()),
            "visited": visited,
            "messages": messages,
        }

    def _ask_all(self, targets: list[dict], route: str, params: dict, budget: float):
        """Ask every target in parallel; yield (peer, answer or None) within the budget."""
        if not targets or budget <= 0:
            return
        jobs = {self.pool.submit(self._ask, p, route, params, budget): p for p in targets}
        done, not_done = futures.wait(jobs, timeout=budget + HOP_MARGIN)
        for job in not_done:
            job.cancel()
            yield jobs[job], None
        for job in done:
            yield jobs[job], job.result()

    def _ask(self, peer: dict, route: str, params: dict, timeout: float) -> dict | None:
        """One call to one peer; a failure is recorded and costs nothing more."""
        try:
            answer = self.transport(peer["url"], route, params, timeout)
        except NotFound:
            self.known.succeeded(peer["url"])
            return None
        except NoAnswer:  # no answer at all: skip it for a while (KnownPeers' down mark)
            self.known.unreachable(peer["url"])
            return None
        except P2PError:
            self.known.failed(peer["url"])
            return None
        self.known.succeeded(peer["url"])
        return answer

    def locate(self, filename: str, *, qid: str, ttl: int, budget: float, path: list[str]) -> dict:
        """Local, then the primary friend, then the backup friend (each onward within ttl).

        A peer that holds the file always says so, even for a query id it has seen: the caller
        may be asking again because the copy that reached us through a slower path timed out.
        Only the forwarding is done once per id, so a query never loops.
        """
        start = self.clock()
        mine = self.local_file(filename)
        if mine is not None:
            return {"file": filename, "peers": [self._holder(mine)], "via": [self.me["name"]]}
        if not self.seen.first_time("locate:" + qid):
            raise NotFound(f"locate {qid} already handled here")
        if ttl > 1:
            path = path + [self.me["name"], self.me["url"]]
            for friend in self._targets(path, limit=2):
                if friend["role"] == "learned":
                    break
                remaining = budget - (self.clock() - start)
                child = min(max(0.0, (remaining - HOP_MARGIN) * HOP_SHRINK), self.request_timeout)
                if child <= 0:
                    break
                params = {
                    "file": filename,
                    "qid": qid,
                    "ttl": ttl - 1,
                    "budget": f"{child:.3f}",
                    "path": ",".join(path),
                }
                answer = self._ask(friend, "/locate", params, child)
                if answer and answer.get("peers"):
                    return {
                        "file": filename,
                        "peers": answer["peers"],
                        "via": [self.me["name"]] + answer.get("via", []),
                    }
        raise NotFound(f"no peer reachable from {self.me['name']} has {filename!r}")
