"""Discovery without the Maestro: Gnutella-style flood search and friend-chain locate.

Transport-agnostic: a Transport is any callable (url, path, params, timeout) -> dict that
raises P2PError on failure, so tests can run a whole network of these in one process.

Every answer says whether it is whole. A search is `complete` only when every peer it was
sent to answered in time with a complete answer of its own; a hop that timed out, could not
be reached, shed the query or sent an answer that does not check out makes it partial, and
`missing` names that hop and why. A locate that found nothing is a NotFound (404) when every
friend asked answered or could not be reached at all (SPEC: "404 if nobody reachable has it";
then `complete` is false and `missing` names them); when one timed out or shed it, the answer
is Incomplete (503): we do not know, so it is never a 404.

Under load each REST worker floods at most `search_concurrency` new searches and locates at
once (a Gate); the others wait in line, first come first served, for as much of their
deadline as leaves the flood time to run (QUEUE_RESERVE). One that cannot get in by then is
shed: it answers at once with this peer's own results and `complete: false`. Forwarded hops
never wait in line (they belong to searches already under way), but beyond MAX_HOPS at once
they are shed too.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

from common.errors import Busy, Incomplete, NoAnswer, NotFound, P2PError, TimedOut
from peer_app.state import KnownPeers, SeenQueries

Transport = Callable[[str, str, dict, float], dict]
Check = Callable[[str, dict], dict]  # (route, remote answer) -> the answer to merge; raises ValueError to drop it
HOP_MARGIN = 0.05  # seconds a hop keeps for itself to answer its caller
HOP_SHRINK = 0.85  # each hop passes on this fraction of what it has left
MIN_HOP_BUDGET = 0.02  # below this a hop is not asked at all (it could not answer in time)
QUEUE_RESERVE = 0.5  # of its deadline, what a new search keeps for the flood after waiting in line (at most half)
MAX_HOPS = 256  # forwarded hops one worker handles at once; beyond, they are shed
SUCCESS_REFRESH = 10.0  # seconds: a peer that answered is written down again at most this often
MAX_MISSING = 32  # entries of `missing` passed on (the count is exact, the list is a sample)
PROBE_TIMEOUT = 0.3  # seconds a probe of a friend with a down mark may take (a refused connection: at once)

# Why part of the network is missing from an answer (the `why` of each `missing` entry).
TIMED_OUT = "timed out"
UNREACHABLE = "unreachable"
SHED = "shed"
PARTIAL = "partial"
BAD_ANSWER = "bad answer"
NOT_ASKED = "not asked: no time left"
DOWN = "down"  # a friend with a down mark (it gave no answer lately): not asked
ERROR = "error"  # it answered with an error of its own


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

    @property
    def origin(self) -> bool:
        """True at the peer a user asked (no peer forwarded it here)."""
        return not self.path

    def child_budget(self, elapsed: float) -> float:
        return max(0.0, (self.budget - elapsed - HOP_MARGIN) * HOP_SHRINK)


@dataclass(frozen=True)
class Reply:
    """What one asked peer gave: its answer, and/or why (part of) its share is missing."""

    peer: dict
    answer: dict | None = None
    missing: str | None = None


class Gate:
    """Admission in one REST worker: new searches wait in line, forwarded hops are counted."""

    def __init__(self, limit: int, hop_limit: int | None = None) -> None:
        self._origins = threading.BoundedSemaphore(limit)
        self.hop_limit = hop_limit if hop_limit is not None else MAX_HOPS
        self._hops = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def origin(self, wait: float) -> Iterator[bool]:
        """Wait up to `wait` seconds for a place; yield whether it was given."""
        admitted = self._origins.acquire(timeout=max(0.0, wait))
        try:
            yield admitted
        finally:
            if admitted:
                self._origins.release()

    @contextlib.contextmanager
    def hop(self) -> Iterator[bool]:
        """A forwarded hop: admitted at once unless hop_limit hops are already under way."""
        with self._lock:
            admitted = self._hops < self.hop_limit
            self._hops += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._hops -= 1

    def enter(self, q_origin: bool, budget: float) -> contextlib.AbstractContextManager[bool]:
        return self.origin(budget - min(QUEUE_RESERVE, budget / 2)) if q_origin else self.hop()


def check_answer(route: str, answer: dict) -> dict:
    """The least a remote answer must be to be merged; anything else is dropped (and the hop counts as missing)."""
    if route == "/search":
        if not isinstance(answer.get("results", []), list) or not isinstance(answer.get("visited", []), list):
            raise ValueError("results and visited must be lists")
        if not isinstance(answer.get("messages", 0), int) or not isinstance(answer.get("complete"), bool):
            raise ValueError("messages must be an integer and complete true or false")
    elif not isinstance(answer.get("peers", []), list):
        raise ValueError("peers must be a list")
    return answer


def _missing(peer: dict, why: str) -> dict:
    return {"peer": peer.get("name") or peer["url"], "why": why}


def _their_missing(answer: dict) -> list[dict]:
    """The `missing` entries of a remote answer, as plain short strings (it is data, not trusted)."""
    entries = answer.get("missing")
    if not isinstance(entries, list):
        return []
    return [
        {"peer": str(m.get("peer"))[:128], "why": str(m.get("why"))[:64]}
        for m in entries[:MAX_MISSING]
        if isinstance(m, dict)
    ]


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
        gate: Gate | None = None,
        check: Check = check_answer,
        probe_every: float = 1.0,
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
        self.gate = gate or Gate(limit=1 << 16)
        self.check = check  # the merge point: issue 8's remote-answer checks go here
        self.probe_every = probe_every  # settings.down_mark_probe

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

    def _targets(self, path: list[str], limit: int) -> tuple[list[dict], list[dict]]:
        """Known peers not yet on the path, friends first: up to limit to ask, and those skipped for a down mark.

        A friend with a down mark (issue 10: it gave no answer lately) is not asked; the next
        known peer is asked instead, and the skipped one is named in `missing` as `down`.
        """
        on_path = set(path)
        asked: list[dict] = []
        down: list[dict] = []
        for peer in self.known.all():
            if len(asked) >= limit:
                break
            if peer["url"] in on_path or (peer["name"] or "") in on_path:
                continue
            (down if peer.get("down_until") and not self.back(peer) else asked).append(peer)
        return asked, down

    def back(self, peer: dict, *, now: bool = False) -> bool:
        """Whether a peer with a down mark answers a cheap probe (GET /health) now; its mark then ends.

        At most one probe per probe_every seconds per peer, whichever worker makes it
        (KnownPeers.probe_due): a friend that is back costs one short probe, a dead one at most
        PROBE_TIMEOUT per interval instead of a request_timeout per lookup. now=True probes a
        marked peer whatever the interval (it just registered here: evidence it restarted).
        """
        if self.probe_every <= 0 and not now:
            return False
        if not self.known.probe_due(peer["url"], 0.0 if now else self.probe_every):
            return False
        try:
            self.transport(peer["url"], "/health", {}, PROBE_TIMEOUT)
        except P2PError:
            return False
        self.known.succeeded(peer["url"])
        return True

    # --- search ------------------------------------------------------------------------------

    def search(self, q: Query) -> dict:
        """Match locally, then flood to up to fanout peers with ttl-1; merge; say whether it is whole."""
        start = self.clock()
        if not self.seen.first_time(q.qid):
            return {
                "qid": q.qid,
                "duplicate": True,
                "results": [],
                "visited": [],
                "messages": 0,
                "complete": True,  # another copy of this query covers this peer
                "missing": [],
            }
        text = q.text.lower()
        results = [self._hit(f) for f in self.local_files() if text in f["name"].lower()]
        visited, messages, missing = [self.me["name"]], 0, []
        if q.ttl > 1 and q.fanout > 0:
            with self.gate.enter(q.origin, q.budget - (self.clock() - start)) as admitted:
                if admitted:
                    messages, missing = self._flood(q, start, results, visited)
                else:
                    missing = [{"peer": self.me["name"], "why": SHED}]
        unique: dict[tuple, dict] = {}
        for r in results:  # this peer's own results come first and are never replaced
            unique.setdefault((r.get("peer"), r.get("file")), r)
        return {
            "qid": q.qid,
            "duplicate": False,
            "results": list(unique.values()),
            "visited": visited,
            "messages": messages,
            "complete": not missing,
            "missing": missing[:MAX_MISSING],
        }

    def _flood(self, q: Query, start: float, results: list, visited: list) -> tuple[int, list[dict]]:
        """Ask up to fanout peers in parallel; extend results and visited; return messages and what is missing."""
        path = q.path + [self.me["name"], self.me["url"]]
        budget = min(q.child_budget(self.clock() - start), self.request_timeout)
        targets, down = self._targets(path, q.fanout)
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
        messages, missing = 0, [_missing(p, DOWN) for p in down]
        for reply in self._ask_all(targets, "/search", params, budget):
            messages += reply.missing != NOT_ASKED
            answer = reply.answer
            if answer is not None:
                results.extend(answer.get("results", []))
                visited.extend(answer.get("visited", []))
                messages += answer.get("messages", 0)
                if answer.get("complete") is not True:
                    missing.extend(_their_missing(answer) or [_missing(reply.peer, PARTIAL)])
            if reply.missing is not None:
                missing.append(_missing(reply.peer, reply.missing))
        return messages, missing

    def _ask_all(self, targets: list[dict], route: str, params: dict, budget: float) -> Iterator[Reply]:
        """Ask every target in parallel; yield one Reply per target within the budget."""
        if budget < MIN_HOP_BUDGET:
            yield from (Reply(p, missing=NOT_ASKED) for p in targets)
            return
        jobs = {self.pool.submit(self._ask, p, route, params, budget): p for p in targets}
        done, not_done = futures.wait(jobs, timeout=budget + HOP_MARGIN)
        for job in not_done:
            job.cancel()
            yield Reply(jobs[job], missing=TIMED_OUT)
        for job in done:
            yield job.result()

    def _ask(self, peer: dict, route: str, params: dict, timeout: float) -> Reply:
        """One call to one peer; a failure is recorded and costs nothing more."""
        try:
            answer = self.transport(peer["url"], route, params, timeout)
        except (NotFound, Incomplete) as err:  # answered: nothing there (maybe only among those that answered)
            self._answered(peer)
            complete = err.extra.get("complete", not isinstance(err, Incomplete)) is True
            return Reply(peer, answer={"complete": complete, "missing": err.extra.get("missing", [])})
        except Busy:  # alive, but shedding load
            return Reply(peer, missing=SHED)
        except TimedOut:
            # Connected but silent. Only a friend that had the whole request_timeout gets a down mark:
            # a hop cut short by a shrinking deadline (a busy network) says nothing about that friend.
            # (A connection that could not even be made is a NoAnswer, marked below: host gone or cut off.)
            if timeout >= self.request_timeout:
                self.known.unreachable(peer["url"])
            return Reply(peer, missing=TIMED_OUT)
        except NoAnswer:  # no answer at all: skip it for a while (KnownPeers' down mark)
            self.known.unreachable(peer["url"])
            return Reply(peer, missing=UNREACHABLE)
        except P2PError:  # it answered, with an error of its own
            self.known.failed(peer["url"])
            return Reply(peer, missing=ERROR)
        self._answered(peer)
        try:
            return Reply(peer, answer=self.check(route, answer))
        except ValueError:
            return Reply(peer, missing=BAD_ANSWER)

    def _answered(self, peer: dict) -> None:
        """Record that peer answered, unless its row (read for this request) already says so.

        One write per peer every SUCCESS_REFRESH seconds instead of one per message; a peer with
        failures or a down mark is always written (an answer clears both).
        """
        last_ok = peer.get("last_ok")
        if (
            peer.get("failures")
            or peer.get("down_until")
            or not last_ok
            or self.known.clock() - last_ok > SUCCESS_REFRESH
        ):
            self.known.succeeded(peer["url"])

    # --- locate ------------------------------------------------------------------------------

    def locate(self, filename: str, *, qid: str, ttl: int, budget: float, path: list[str]) -> dict:
        """Local, then the primary friend, then the backup friend (each onward within ttl).

        A peer that holds the file always says so, even for a query id it has seen: the caller
        may be asking again because the copy that reached us through a slower path timed out.
        Only the forwarding is done once per id, so a query never loops. Nothing found: NotFound
        when every friend asked answered, else Incomplete (or Busy when this peer shed it).
        """
        start = self.clock()
        mine = self.local_file(filename)
        if mine is not None:
            return {"file": filename, "peers": [self._holder(mine)], "via": [self.me["name"]], "complete": True}
        if not self.seen.first_time("locate:" + qid):
            raise NotFound(f"locate {qid} already handled here")
        missing: list[dict] = []
        if ttl > 1:
            with self.gate.enter(not path, budget - (self.clock() - start)) as admitted:
                if not admitted:  # a 503 that says, like every locate answer, that it is not whole
                    raise Busy(
                        f"{self.me['name']} is too busy to ask its friends for {filename!r}; retry shortly",
                        extra={"complete": False, "missing": [{"peer": self.me["name"], "why": SHED}]},
                    )
                found = self._chain(filename, qid, ttl, budget, path, start, missing)
                if found is not None:
                    return found
        extra = {"complete": not missing, "missing": missing[:MAX_MISSING]}
        if any(m["why"] not in (UNREACHABLE, DOWN) for m in missing):  # slow, busy or failing, not gone
            names = ", ".join(f"{m['peer']} ({m['why']})" for m in missing[:4])
            raise Incomplete(
                f"nobody that answered from {self.me['name']} has {filename!r}; no answer from {names}", extra=extra
            )
        # SPEC: 404 when nobody reachable has it; a friend that is down is named in `missing`.
        raise NotFound(f"no peer reachable from {self.me['name']} has {filename!r}", extra=extra)

    def _chain(
        self, filename: str, qid: str, ttl: int, budget: float, path: list[str], start: float, missing: list[dict]
    ) -> dict | None:
        """Ask the friends one after the other; the first answer naming holders wins."""
        path = path + [self.me["name"], self.me["url"]]
        friends, down = self._targets(path, limit=2)
        missing.extend(_missing(p, DOWN) for p in down if p["role"] != "learned")
        for friend in friends:
            if friend["role"] == "learned":
                break
            remaining = budget - (self.clock() - start)
            child = min(max(0.0, (remaining - HOP_MARGIN) * HOP_SHRINK), self.request_timeout)
            if child < MIN_HOP_BUDGET:
                missing.append(_missing(friend, NOT_ASKED))
                break
            params = {"file": filename, "qid": qid, "ttl": ttl - 1, "budget": f"{child:.3f}", "path": ",".join(path)}
            reply = self._ask(friend, "/locate", params, child)
            if reply.answer is not None and reply.answer.get("complete") is False:
                missing.extend(_their_missing(reply.answer) or [_missing(friend, PARTIAL)])
            if reply.answer and reply.answer.get("peers"):
                return {
                    "file": filename,
                    "peers": reply.answer["peers"],
                    "via": [self.me["name"]] + reply.answer.get("via", []),
                    "complete": True,
                }
            if reply.missing is not None:
                missing.append(_missing(friend, reply.missing))
        return None
