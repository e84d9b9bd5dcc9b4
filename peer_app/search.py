"""Discovery without the Maestro: Gnutella-style flood search and friend-chain locate.

Transport-agnostic: a Transport is any callable (url, path, params, timeout) -> dict that
raises P2PError on failure, so tests can run a whole network of these in one process.

A flood asks each peer once (docs/protocol.md, "Search hops"). Every hop carries `reached`: the
peers the query reached or that someone on its way asks; a peer never asks those. The origin
also plans: from the ask orders its earlier floods brought back (`knows`), it draws a tree
that reaches every peer it can once, breadth first, at most fanout children per peer, and
each peer it asks gets its share (`plan`). Peers no plan names are flooded as they come; the
query id, handled once per peer, stays the safety net. Knowledge is soft state of this
process: a cold origin simply floods with `reached`, and learns.

Every answer says whether it is whole. A search is `complete` only when every peer it was
sent to answered in time with a complete answer of its own; a hop that timed out, could not
be reached, shed the query or sent an answer that does not check out makes it partial, and
`missing` names that hop and why (a planned peer the asked one does not know, too). A locate
that found nothing is a NotFound (404) when every friend asked answered or could not be
reached at all (docs/protocol.md, 5.2: 404 when nobody reachable has it; then `complete` is false and
`missing` names them); when one timed out or shed it, the answer is Incomplete (503): we do
not know, so it is never a 404.

Under load each REST worker floods at most `search_concurrency` new searches and locates at
once (a Gate); the others wait in line, first come first served, for as much of their
deadline as leaves the flood time to run (QUEUE_RESERVE). One that cannot get in by then is
shed: it answers at once with this peer's own results and `complete: false`. Forwarded hops
(from a peer that proved who it is: peer_app/hops.py) never wait in line, but beyond MAX_HOPS
at once they are shed too. A caller that hangs up ends the wait, in line or on the flood, and
the hops still open are cut, so the peers below stop as well.
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
from common.fields import MAX_ADDRESS, MAX_REASON
from peer_app.hops import (
    MAX_KNOWS,
    MAX_ORDER,
    MAX_REACHED,
    Knowledge,
    Plan,
    format_names,
    format_plan,
    make_plan,
    plan_names,
)
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
NOT_KNOWN = "not known here"  # planned here by an origin whose knowledge was stale: not asked
CALLER_GONE = "caller gone"  # the caller hung up: the flood stopped
WAIT_SLICE = 0.05  # seconds between two looks at whether the caller is still there


def new_qid() -> str:
    return uuid.uuid4().hex


@dataclass
class Query:
    """One search as it travels: text, id, hops left, fanout, time left, and (from a peer) its hop fields.

    reached: names of peers the query reached or that someone on its way asks (never asked
    again); plan: this peer's share of the origin's plan (peer_app/hops.py); hop: it came from
    another peer (an authenticated one: hops.hop_sender), not from a user; gone: whether the
    caller has hung up (then the flood stops and its subtree with it).
    """

    text: str
    qid: str
    ttl: int
    fanout: int
    budget: float
    reached: list[str] = field(default_factory=list)
    plan: Plan | None = None
    hop: bool = False
    learn: bool = False
    gone: Callable[[], bool] = field(default=lambda: False, repr=False)

    @property
    def origin(self) -> bool:
        """True at the peer a user asked (no peer forwarded it here)."""
        return not self.hop

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
    def origin(self, wait: float, gone: Callable[[], bool] = lambda: False) -> Iterator[bool]:
        """Wait up to `wait` seconds for a place (less if the caller hangs up); yield whether it was given."""
        deadline = time.monotonic() + max(0.0, wait)
        admitted = self._origins.acquire(timeout=min(max(0.0, wait), WAIT_SLICE))
        while not admitted and time.monotonic() < deadline and not gone():
            admitted = self._origins.acquire(timeout=min(max(0.0, deadline - time.monotonic()), WAIT_SLICE))
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

    def enter(
        self, q_origin: bool, budget: float, gone: Callable[[], bool] = lambda: False
    ) -> contextlib.AbstractContextManager[bool]:
        return self.origin(budget - min(QUEUE_RESERVE, budget / 2), gone) if q_origin else self.hop()


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
        {"peer": str(m.get("peer"))[:MAX_ADDRESS], "why": str(m.get("why"))[:MAX_REASON]}
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
        knowledge: Knowledge | None = None,
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
        self.check = check  # the merge point: the remote-answer checks (peer_app/answers.py) go here
        self.probe_every = probe_every  # settings.down_mark_probe
        self.knowledge = knowledge or Knowledge(clock)  # other peers' ask orders, for this peer's plans

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

    def _targets(
        self, peers: list[dict], reached: list[str], limit: int, deadline: float
    ) -> tuple[list[dict], list[dict]]:
        """Of peers (known.all(), friends first), those not reached yet: up to limit to ask, and those
        skipped for a down mark.

        A friend with a down mark (docs/protocol.md, 5.4: it gave no answer lately) is not asked; the next
        known peer is asked instead, and the skipped one is named in `missing` as `down`. deadline
        (this Discovery's clock) is when this hop must answer: a probe that does not fit is not made.
        """
        on_path = set(reached)
        asked: list[dict] = []
        down: list[dict] = []
        for peer in peers:
            if len(asked) >= limit:
                break
            if peer["url"] in on_path or (peer["name"] or "") in on_path:
                continue
            (down if peer.get("down_until") and not self.back(peer, deadline=deadline) else asked).append(peer)
        return asked, down

    def back(self, peer: dict, *, now: bool = False, deadline: float | None = None) -> bool:
        """Whether a peer with a down mark answers a cheap probe (GET /health) now; its mark then ends.

        At most one probe per probe_every seconds per peer, whichever worker makes it
        (KnownPeers.probe_due): a friend that is back costs one short probe, a dead one at most
        PROBE_TIMEOUT per interval instead of a request_timeout per lookup. Whether one is due is
        read from the peer's row first (its `probed` time), so a lookup that passes a marked friend
        writes nothing until the interval is over; a hop with less than PROBE_TIMEOUT left before
        its deadline makes none. now=True probes a marked peer whatever the interval (it just
        registered here: evidence it restarted).
        """
        if not now:
            if self.probe_every <= 0 or (deadline is not None and deadline - self.clock() < PROBE_TIMEOUT):
                return False
            probed = peer.get("probed")
            if probed is not None and self.known.clock() - probed < self.probe_every:
                return False
        if not self.known.probe_due(peer["url"], 0.0 if now else self.probe_every):
            return False
        try:
            self.transport(peer["url"], "/health", {}, PROBE_TIMEOUT)
        except P2PError:
            return False
        self.known.succeeded(peer["url"])
        return True

    def order(self, peers: list[dict], marked: frozenset[str] = frozenset()) -> list[str]:
        """The names this peer asks first (friends, then learned peers; down marks left out): what plans rely on.

        peers: known.all() as this hop read it; marked: the names it marked down since.
        """
        names = [p["name"] for p in peers if p["name"] and not p.get("down_until") and p["name"] not in marked]
        return names[:MAX_ORDER]

    # --- search ------------------------------------------------------------------------------

    def search(self, q: Query) -> dict:
        """Match locally, then flood by the plan (or to up to fanout peers) with ttl-1; merge; say if it is whole."""
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
        visited, messages = [self.me["name"]], 0
        missing: list[dict] = []
        knows: dict[str, list[str]] = {}
        flood = q.ttl > 1 and q.fanout > 0
        peers = self.known.all() if flood or q.learn else []  # read once per hop
        marked: frozenset[str] = frozenset()
        if flood:
            with self.gate.enter(q.origin, q.budget - (self.clock() - start), q.gone) as admitted:
                if admitted:
                    messages, missing, marked = self._flood(q, start, peers, results, visited, knows)
                else:
                    missing = [{"peer": self.me["name"], "why": SHED}]
        unique: dict[tuple, dict] = {}
        for r in results:  # this peer's own results come first and are never replaced
            unique.setdefault((r.get("peer"), r.get("file")), r)
        answer = {
            "qid": q.qid,
            "duplicate": False,
            "results": list(unique.values()),
            "visited": visited,
            "messages": messages,
            "complete": not missing,
            "missing": missing[:MAX_MISSING],
        }
        if q.learn:  # the origin plans its next floods with these
            knows[self.me["name"]] = self.order(peers, marked)
            answer["knows"] = dict(list(knows.items())[-MAX_KNOWS:])
        return answer

    def _plan(self, q: Query, peers: list[dict], deadline: float) -> tuple[Plan, list[str], bool, list[dict]]:
        """This peer's share of the flood, the names the whole plan covers, whether answers bring
        orders, and the friends skipped for a down mark (named in `missing`)."""
        if q.hop:
            return q.plan or [], [], q.learn, []
        learn = self.knowledge.should_learn()
        first, down = self._targets(peers, [self.me["name"], *q.reached], q.fanout, deadline)
        names = [p["name"] for p in first if p["name"]]
        plan = make_plan(names, self.knowledge.orders(), {self.me["name"], *q.reached}, q.fanout, q.ttl - 1)
        return plan, list(plan_names(plan)), learn, down

    def _flood(
        self, q: Query, start: float, peers: list[dict], results: list, visited: list, knows: dict
    ) -> tuple[int, list[dict], frozenset[str]]:
        """Ask this peer's planned share, then unplanned known peers up to fanout, in parallel; merge.

        Every target's `reached` holds the query's, this peer, every peer it asks now and (at the
        origin) every peer of the plan: nobody asks them again. Returns the message count, what
        is missing and the names of the peers this flood marked down (_ask).
        """
        deadline = start + q.budget
        plan, planned, learn, down = self._plan(q, peers, deadline)
        budget = min(q.child_budget(self.clock() - start), self.request_timeout)
        by_name = {p["name"]: p for p in peers if p["name"]}
        missing: list[dict] = [_missing(p, DOWN) for p in down]
        asks: list[tuple[dict, Plan]] = []
        for name, share in plan:
            peer = by_name.get(name)
            if peer is None or name == self.me["name"]:
                missing.append({"peer": name, "why": NOT_KNOWN})
            elif peer.get("down_until") and not self.back(peer, deadline=deadline):
                missing.append(_missing(peer, DOWN))
            else:
                asks.append((peer, share))
        seen = [*q.reached, *planned, self.me["name"], *(name for name, _ in plan)]
        if len(asks) < q.fanout and q.hop:  # peers nobody planned: flooded as they come
            extra, skipped = self._targets(peers, seen, q.fanout - len(asks), deadline)
            asks.extend((p, []) for p in extra)
            missing.extend(_missing(p, DOWN) for p in skipped)
        reached = format_names([*seen, *(p["name"] for p, _ in asks)])
        jobs = []
        for peer, share in asks:
            params = {
                "query": q.text,
                "qid": q.qid,
                "ttl": q.ttl - 1,
                "fanout": q.fanout,
                "budget": f"{budget:.3f}",
                "reached": reached,
            }
            if share:
                params["plan"] = format_plan(share)
            if learn:
                params["learn"] = "1"
            jobs.append((peer, params))
        messages = 0
        marked: set[str] = set()
        for reply in self._ask_all(jobs, "/search", budget, q.gone):
            messages += reply.missing != NOT_ASKED
            if reply.peer["name"] and (
                reply.missing == UNREACHABLE or (reply.missing == TIMED_OUT and budget >= self.request_timeout)
            ):
                marked.add(reply.peer["name"])
            answer = reply.answer
            if answer is not None:
                results.extend(answer.get("results", []))
                visited.extend(answer.get("visited", []))
                messages += answer.get("messages", 0)
                if learn and answer.get("knows"):
                    knows.update(answer["knows"])
                if answer.get("complete") is not True:
                    theirs = _their_missing(answer)
                    missing.extend(theirs or [_missing(reply.peer, PARTIAL)])
                    if q.origin and any(m["why"] == NOT_KNOWN for m in theirs):
                        self.knowledge.stale()
            if reply.missing is not None:
                missing.append(_missing(reply.peer, reply.missing))
        if q.origin:
            self.knowledge.merge(knows)
            orders = self.knowledge.orders()
            if any(v not in orders for v in visited[1:]):  # peers it cannot plan for yet: ask for orders next time
                self.knowledge.stale()
        return messages, missing, frozenset(marked)

    def _ask_all(
        self, jobs: list[tuple[dict, dict]], route: str, budget: float, gone: Callable[[], bool] = lambda: False
    ) -> Iterator[Reply]:
        """Ask every (peer, params) in parallel; yield one Reply per peer within the budget.

        While waiting it looks at whether its own caller hung up (gone): then it stops waiting,
        and the hops still open are cut, so their peers stop too (each does the same).
        """
        if budget < MIN_HOP_BUDGET:
            yield from (Reply(p, missing=NOT_ASKED) for p, _ in jobs)
            return
        pending = {self.pool.submit(self._ask, p, route, params, budget): p for p, params in jobs}
        deadline = self.clock() + budget + HOP_MARGIN
        while pending:
            left = deadline - self.clock()
            if left <= 0:
                break
            done, _ = futures.wait(pending, timeout=min(left, WAIT_SLICE), return_when=futures.FIRST_COMPLETED)
            for job in done:
                pending.pop(job)
                yield job.result()
            if pending and not done and gone():
                for job, peer in pending.items():
                    job.cancel()
                    yield Reply(peer, missing=CALLER_GONE)
                self.abandon(jobs)
                return
        for job, peer in pending.items():
            job.cancel()
            yield Reply(peer, missing=TIMED_OUT)

    def abandon(self, jobs: list[tuple[dict, dict]]) -> None:
        """Cut the hops of a flood nobody waits for any more (the transport's `abandon`, when it has one)."""
        cut = getattr(self.transport, "abandon", None)
        if cut is not None:
            cut({params["qid"] for _, params in jobs})

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

    def locate(
        self, filename: str, *, qid: str, ttl: int, budget: float, reached: list[str], hop: bool = False
    ) -> dict:
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
            with self.gate.enter(not hop, budget - (self.clock() - start)) as admitted:
                if not admitted:  # a 503 that says, like every locate answer, that it is not whole
                    raise Busy(
                        f"{self.me['name']} is too busy to ask its friends for {filename!r}; retry shortly",
                        extra={"complete": False, "missing": [{"peer": self.me["name"], "why": SHED}]},
                    )
                found = self._chain(filename, qid, ttl, budget, reached, start, missing)
                if found is not None:
                    return found
        extra = {"complete": not missing, "missing": missing[:MAX_MISSING]}
        if any(m["why"] not in (UNREACHABLE, DOWN) for m in missing):  # slow, busy or failing, not gone
            names = ", ".join(f"{m['peer']} ({m['why']})" for m in missing[:4])
            raise Incomplete(
                f"nobody that answered from {self.me['name']} has {filename!r}; no answer from {names}", extra=extra
            )
        # docs/protocol.md, 5.2: 404 when nobody reachable has it; a friend that is down is named in `missing`.
        raise NotFound(f"no peer reachable from {self.me['name']} has {filename!r}", extra=extra)

    def _chain(
        self, filename: str, qid: str, ttl: int, budget: float, reached: list[str], start: float, missing: list[dict]
    ) -> dict | None:
        """Ask the friends one after the other; the first answer naming holders wins."""
        reached = [*reached, self.me["name"]][-MAX_REACHED:]
        friends, down = self._targets(self.known.all(), reached, limit=2, deadline=start + budget)
        missing.extend(_missing(p, DOWN) for p in down if p["role"] != "learned")
        for friend in friends:
            if friend["role"] == "learned":
                break
            remaining = budget - (self.clock() - start)
            child = min(max(0.0, (remaining - HOP_MARGIN) * HOP_SHRINK), self.request_timeout)
            if child < MIN_HOP_BUDGET:
                missing.append(_missing(friend, NOT_ASKED))
                break
            params = {"file": filename, "qid": qid, "ttl": ttl - 1, "budget": f"{child:.3f}"}
            params["reached"] = format_names(reached)
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
