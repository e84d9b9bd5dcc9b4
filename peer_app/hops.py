"""What a search or locate hop carries from peer to peer, who may send it, and the flood's plan.

A hop is a `GET /search` (or `/locate`) whose sender is another peer of the network. Beside the
seed's parameters it carries (docs/protocol.md, "Search hops"):

- `qid`: the query's id; a peer handles an id once (the safety net against loops);
- `budget`: the seconds its sender still waits for the answer (the caller's deadline, shrunk);
- `reached`: names of peers the query has reached or that someone on its way asks (at most
  MAX_REACHED): a peer never asks those;
- `plan`: this peer's share of the origin's plan, `a(b,c),d`: ask a (which asks b and c) and d;
- `learn=1`: answers carry `knows`, each peer's ask order, from which origins plan later floods.

Only a caller that proved to be a peer may send these (hop_sender): anyone else's request is a
new search from a user, with a fresh id, in line at the admission gate like every other. What a
member that lies can do with them is said in docs/protocol.md: it can starve its own share of
the flood (as by not forwarding at all), never make another peer call a URL it chose (plans and
lists hold names, looked up in the receiving peer's own table), and never cost more than the
caps below.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from common.errors import BadRequest
from common.names import PEER_NAME_RULE
from common.security import OPERATOR, Guard

MAX_REACHED = 128  # names in `reached`; the network a flood covers well is about this big
MAX_FIELD_CHARS = 1536  # characters of `reached`, and of `plan`, a peer sends: a hop's request line stays
#                         well inside gunicorn's 4,094 bytes whatever the names' length
MAX_PLAN_DEPTH = 16
MAX_ORDER = 16  # names in one peer's advertised ask order
MAX_KNOWS = 128  # peers' orders in one answer
KNOWLEDGE_TTL = 60.0  # seconds an order learned from an answer is used for plans
LEARN_EVERY = 20.0  # seconds between floods that ask for orders again
QID = re.compile(r"[0-9a-zA-Z_-]{8,64}")
_NAME = re.compile(PEER_NAME_RULE)
_TOKEN = re.compile(r"[(),]|[a-z0-9_-]+")

Plan = list[tuple[str, "Plan"]]  # the peers to ask, each with its own share


def hop_sender(guard: Guard, address: str | None, authorization: str | None) -> str | None:
    """The peer that sent this request, when it may carry hop fields; None for anyone else.

    With a network secret, only a peer's own credential counts (not a trusted address, not the
    operator's token: a user's request is never a hop). Without a secret nobody has a
    credential, and the trusted addresses are the network (the same rule as for writes).
    """
    if guard.secret is None:
        return "peer" if guard.trusted(address) else None
    principal = guard.presented(authorization)
    return principal if principal is not None and principal != OPERATOR else None


def parse_names(raw: str | None, key: str = "reached") -> list[str]:
    """A comma-separated list of peer names (at most MAX_REACHED), else BadRequest."""
    if not raw:
        return []
    names = raw.split(",")
    if len(names) > MAX_REACHED:
        raise BadRequest(f"'{key}' holds {len(names)} names (at most {MAX_REACHED})")
    for name in names:
        if not _NAME.fullmatch(name):
            raise BadRequest(f"'{key}' holds {name[:40]!r}, not a peer name")
    return names


def parse_plan(raw: str | None) -> Plan:
    """`a(b,c),d` into [(a, [(b, []), (c, [])]), (d, [])]; BadRequest when malformed or too big."""
    if not raw:
        return []
    tokens = _TOKEN.findall(raw)
    if "".join(tokens) != raw:
        raise BadRequest("'plan' holds characters other than peer names, '(', ')' and ','")
    root: Plan = []
    stack: list[Plan] = [root]
    count = 0
    last: Plan | None = None  # children of the name just read
    expect_name = True
    for tok in tokens:
        if tok == "(":
            if last is None or len(stack) > MAX_PLAN_DEPTH:
                raise BadRequest("'plan' is malformed or nested too deep")
            stack.append(last)
            last, expect_name = None, True
        elif tok == ")":
            if len(stack) == 1 or expect_name:
                raise BadRequest("'plan' is malformed")
            stack.pop()
            last, expect_name = None, False
        elif tok == ",":
            if expect_name:
                raise BadRequest("'plan' is malformed")
            last, expect_name = None, True
        else:
            if not expect_name:
                raise BadRequest("'plan' is malformed")
            count += 1
            if count > MAX_REACHED:
                raise BadRequest(f"'plan' names more than {MAX_REACHED} peers")
            last = []
            stack[-1].append((tok, last))
            expect_name = False
    if len(stack) != 1 or expect_name:
        raise BadRequest("'plan' is malformed")
    return root


def format_plan(plan: Plan) -> str:
    return ",".join(name + (f"({format_plan(kids)})" if kids else "") for name, kids in plan)


def format_names(names: Iterable[str]) -> str:
    """`reached` for the wire: each name once, the newest kept when there are too many (oldest dropped first)."""
    kept: list[str] = []
    chars = 0
    for name in reversed(list(dict.fromkeys(names))):
        if len(kept) >= MAX_REACHED or chars + len(name) + 1 > MAX_FIELD_CHARS:
            break
        kept.append(name)
        chars += len(name) + 1
    return ",".join(reversed(kept))


def plan_names(plan: Plan) -> Iterable[str]:
    for name, kids in plan:
        yield name
        yield from plan_names(kids)


def make_plan(
    first: list[str],
    orders: Mapping[str, list[str]],
    taken: set[str],
    fanout: int,
    depth: int,
    max_chars: int = MAX_FIELD_CHARS - 200,
) -> Plan:
    """The origin's plan: breadth first from its own candidates (first), each peer asking at most fanout.

    orders: what each peer asks first (learned from answers); taken: names not to plan (this
    peer, and anything already reached). A peer whose order is unknown gets no share: it floods
    the peers it knows that are on nobody's plan (`reached` lists every planned name). The plan
    stops growing at max_chars characters of names (it travels in `reached` too).
    """
    taken = set(taken)
    chars = 0
    root: Plan = []
    frontier: list[tuple[list[str], Plan]] = [(first, root)]
    for _ in range(max(0, depth)):
        following: list[tuple[list[str], Plan]] = []
        for order, kids in frontier:
            for name in order:
                if len(kids) >= fanout:
                    break
                if name in taken:
                    continue
                chars += len(name) + 3
                if chars > max_chars:
                    return root
                taken.add(name)
                share: Plan = []
                kids.append((name, share))
                following.append((orders.get(name, []), share))
        frontier = following
        if not frontier:
            break
    return root


def parse_knows(value: object) -> dict[str, list[str]]:
    """An answer's `knows` ({name: [names]}), checked; ValueError when it is not that shape or too big."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_KNOWS:
        raise ValueError(f"knows must be an object of at most {MAX_KNOWS} entries")
    clean: dict[str, list[str]] = {}
    for name, order in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError("knows holds a key that is not a peer name")
        if not isinstance(order, list) or len(order) > MAX_ORDER:
            raise ValueError(f"knows[{name}] must be a list of at most {MAX_ORDER} names")
        if not all(isinstance(n, str) and _NAME.fullmatch(n) for n in order):
            raise ValueError(f"knows[{name}] holds something that is not a peer name")
        clean[name] = list(order)
    return clean


class Knowledge:
    """Peers' ask orders learned from answers (this process only: soft state, lost on restart at no cost)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, capacity: int = 4 * MAX_KNOWS) -> None:
        self.clock = clock
        self.capacity = capacity
        self._orders: dict[str, tuple[list[str], float]] = {}
        self._learned = float("-inf")
        self._lock = threading.Lock()

    def merge(self, knows: Mapping[str, list[str]]) -> None:
        now = self.clock()
        with self._lock:
            for name, order in knows.items():
                self._orders.pop(name, None)
                self._orders[name] = (order, now)
            while len(self._orders) > self.capacity:
                self._orders.pop(next(iter(self._orders)))

    def orders(self) -> dict[str, list[str]]:
        """Every order learned within KNOWLEDGE_TTL."""
        fresh = self.clock() - KNOWLEDGE_TTL
        with self._lock:
            return {name: order for name, (order, at) in self._orders.items() if at >= fresh}

    def should_learn(self) -> bool:
        """Whether this flood asks for orders (once every LEARN_EVERY seconds, or after stale()."""
        now = self.clock()
        with self._lock:
            if now - self._learned < LEARN_EVERY:
                return False
            self._learned = now
            return True

    def stale(self) -> None:
        """A plan went wrong (a planned peer was not known where planned): ask again next time."""
        with self._lock:
            self._learned = float("-inf")


@dataclass(frozen=True)
class HopFields:
    """The hop part of a request, parsed; empty for a user's request."""

    sender: str | None = None
    qid: str | None = None
    reached: tuple[str, ...] = ()
    plan: Plan | None = None
    learn: bool = False


def hop_fields(args: Mapping[str, str], sender: str | None) -> HopFields:
    """The hop fields of a request from sender (hop_sender); a user's (sender None) are ignored."""
    if sender is None or not args.get("qid"):
        return HopFields()
    qid = args["qid"]
    if len(qid) > 64 or not QID.fullmatch(qid):
        raise BadRequest("'qid' must be 8-64 letters, digits, '-' or '_'")
    raw_reached = args.get("reached") or ""
    raw_plan = args.get("plan") or ""
    if len(raw_reached) > MAX_REACHED * 65 or len(raw_plan) > MAX_REACHED * 67:
        raise BadRequest(f"hop fields are longer than {MAX_REACHED} names")
    return HopFields(
        sender=sender,
        qid=qid,
        reached=tuple(parse_names(raw_reached)),
        plan=parse_plan(raw_plan),
        learn=args.get("learn") == "1",
    )
