"""A peer's durable state in one SQLite file: known peers, seen query ids, transfer totals.

The shared folder's hash cache lives in the same file; its table belongs to index.py.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

from common.config import NodeConfig
from common.db import Database
from common.errors import Busy

SCHEMA = """
CREATE TABLE IF NOT EXISTS known_peers (
    url TEXT PRIMARY KEY,
    name TEXT,
    grpc_address TEXT,
    role TEXT NOT NULL DEFAULT 'learned',   -- 'primary', 'backup' or 'learned'
    failures INTEGER NOT NULL DEFAULT 0,
    last_ok REAL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_marks (   -- peers that did not answer: skipped until down_until
    url TEXT PRIMARY KEY,
    down_until REAL NOT NULL,
    strikes INTEGER NOT NULL,              -- failures in a row; each doubles the mark
    probed REAL NOT NULL DEFAULT 0         -- when a lookup last probed it while marked (Discovery.back)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_queries (
    qid TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_queries_by_age ON seen_queries(at);
CREATE TABLE IF NOT EXISTS transfer_totals (
    rpc TEXT PRIMARY KEY,          -- Download, Upload, DummyDownload, DummyUpload
    bytes INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

ROLE_ORDER = {"primary": 0, "backup": 1, "learned": 2}
SEEN_RETENTION = 600.0  # seconds a query id is remembered


def open_db(path: str) -> Database:
    """Open (and create) a peer's database; SharedIndex adds its own table (peer_app/index.py)."""
    db = Database(path, SCHEMA)
    if not db.connect().read_only:
        db.add_column("peer_marks", "probed", "REAL NOT NULL DEFAULT 0")  # databases from before the probes
    return db


def known_peers(db: Database, config: NodeConfig) -> KnownPeers:
    """This peer's KnownPeers with its two friends from the config seeded (the REST app and the gRPC process)."""
    s = config.settings
    known = KnownPeers(
        db,
        prune_after=s.prune_after_failures,
        self_url=config.rest_url,
        down_mark=s.down_mark,
        down_mark_max=s.down_mark_max,
    )
    with db.unless_full("the friends from the config"):  # known from before when the disk is full
        for role, friend in config.friends.items():
            known.add(friend.rest_url, friend.name, role=role)
    return known


class KnownPeers:
    """Peers this peer can ask: its two friends first, then those it learned.

    A friend that did not answer at all (timeout, refused) carries a short "down" mark that every
    gunicorn worker sees: discovery skips it until the mark ends, so a cut-off friend costs one
    timeout per mark instead of one per lookup. The mark doubles with each failure in a row (up
    to down_mark_max) and any answer clears it: an answer to a lookup, to the cheap probe a lookup
    makes while it is marked (at most one per probe interval, see probe_due), or its registering
    here after a restart. Learned peers are pruned instead (prune_after).
    """

    def __init__(
        self,
        db: Database,
        *,
        prune_after: int,
        self_url: str,
        clock: Callable[[], float] = time.time,
        down_mark: float = 5.0,
        down_mark_max: float = 30.0,
    ) -> None:
        self.db = db
        self.prune_after = prune_after
        self.self_url = self_url
        self.clock = clock
        self.down_mark = down_mark
        self.down_mark_max = down_mark_max
        # connection -> (version, rows); weak, so a connection opened after one was freed (whose id
        # it may get) never finds that one's rows
        self._cache: weakref.WeakKeyDictionary[object, tuple[tuple[int, int], list[dict]]] = weakref.WeakKeyDictionary()

    def add(self, url: str, name: str | None = None, grpc_address: str | None = None, role: str = "learned") -> bool:
        """Remember a peer; return False for ourselves. A learned entry never renames or demotes a friend."""
        if url.rstrip("/") == self.self_url:
            return False
        with self.db.connect() as conn:
            conn.execute(
                "INSERT INTO known_peers (url, name, grpc_address, role, added) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(url) DO UPDATE SET name=COALESCE(excluded.name, name),"
                " grpc_address=COALESCE(excluded.grpc_address, grpc_address),"
                " role=CASE WHEN excluded.role != 'learned' THEN excluded.role ELSE role END"
                " WHERE excluded.role != 'learned' OR known_peers.role = 'learned'",
                (url.rstrip("/"), name, grpc_address, role, self.clock()),
            )
        return True

    def learn(self, url: str, name: str, grpc_address: str, *, limit: int) -> None:
        """Remember a verified peer as learned; Busy when limit learned peers are known already."""
        with self.db.connect() as conn:
            known = conn.execute("SELECT 1 FROM known_peers WHERE url = ?", (url,)).fetchone()
            count = conn.execute("SELECT COUNT(*) FROM known_peers WHERE role = 'learned'").fetchone()[0]
            if known is None and count >= limit:
                raise Busy(f"this peer knows {count} learned peers already (max_learned_peers); nothing added")
        self.add(url, name, grpc_address)

    def get(self, url: str) -> dict | None:
        """The known peer at url, or None."""
        row = self.db.connect().execute("SELECT * FROM known_peers WHERE url = ?", (url,)).fetchone()
        return None if row is None else dict(row)

    def all(self) -> list[dict]:
        """Every known peer, friends first; `down_until` is set while a peer carries a down mark,
        and `probed` then says when a lookup last probed it (KnownPeers.probe_due).

        Read from SQLite only when the file changed since the last read on this connection (any
        process's write moves `data_version`, this connection's own move `total_changes`): a
        flood asks for this on every hop.
        """
        conn = self.db.connect()
        version = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        cached = self._cache.get(conn)
        if cached is None or cached[0] != version:
            rows = conn.execute(
                "SELECT k.*, m.down_until AS marked_until, m.probed AS marked_probed"
                " FROM known_peers k LEFT JOIN peer_marks m ON m.url = k.url"
            ).fetchall()
            ordered = sorted((dict(r) for r in rows), key=lambda r: (ROLE_ORDER.get(r["role"], 9), r["url"]))
            cached = self._cache[conn] = (version, ordered)
        now = self.clock()
        out = []
        for row in cached[1]:
            peer = dict(row)
            marked, probed = peer.pop("marked_until"), peer.pop("marked_probed")
            down = marked is not None and marked > now
            peer["down_until"] = marked if down else None
            peer["probed"] = probed if down else None
            out.append(peer)
        return out

    def reachable(self) -> list[dict]:
        """The known peers worth asking now (friends first): those without a down mark."""
        return [p for p in self.all() if p["down_until"] is None]

    def friends(self) -> list[dict]:
        """The primary then the backup friend."""
        return [p for p in self.all() if p["role"] in ("primary", "backup")]

    def succeeded(self, url: str, name: str | None = None) -> None:
        """Record that url answered (which also ends its down mark); a friend keeps the topology's name."""
        with self.db.unless_full("known peers' marks"), self.db.connect() as conn:
            conn.execute(
                "UPDATE known_peers SET failures = 0, last_ok = ?,"
                " name = CASE WHEN role = 'learned' THEN COALESCE(?, name) ELSE name END WHERE url = ?",
                (self.clock(), name, url),
            )
            conn.execute("DELETE FROM peer_marks WHERE url = ?", (url,))

    def probe_due(self, url: str, every: float) -> bool:
        """Whether url carries a down mark and nobody probed it within every seconds; claims the probe if so.

        One UPDATE: callers first look at the `probed` time all() gave them and only come here
        when a probe looks due (the UPDATE settles which worker makes it).
        """
        now = self.clock()
        with self.db.unless_full("known peers' marks"):
            return bool(
                self.db.connect()
                .execute(
                    "UPDATE peer_marks SET probed = ? WHERE url = ? AND down_until > ? AND probed <= ?",
                    (now, url, now, now - every),
                )
                .rowcount
            )
        return False

    def unreachable(self, url: str) -> float:
        """Record that url did not answer at all: mark a friend down; return how long it is skipped.

        A learned peer gets no mark: it is pruned after prune_after failures, as before.
        """
        now = self.clock()
        known = self.db.connect().execute("SELECT role FROM known_peers WHERE url = ?", (url,)).fetchone()
        if known is None or known["role"] not in ("primary", "backup"):
            self.failed(url)
            return 0.0
        with self.db.unless_full("known peers' marks"), self.db.connect() as conn:
            row = conn.execute("SELECT strikes FROM peer_marks WHERE url = ?", (url,)).fetchone()
            strikes = (row["strikes"] if row else 0) + 1
            seconds = min(self.down_mark * 2 ** (strikes - 1), self.down_mark_max)
            conn.execute(
                "INSERT INTO peer_marks (url, down_until, strikes, probed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(url) DO UPDATE SET down_until = excluded.down_until, strikes = excluded.strikes,"
                " probed = excluded.probed",
                (url, now + seconds, strikes, now),  # it just failed: the first probe is one interval away
            )
        self.failed(url)
        return seconds

    def failed(self, url: str) -> None:
        """Record that url did not answer; drop a learned peer that keeps failing."""
        with self.db.unless_full("known peers' marks"), self.db.connect() as conn:
            conn.execute("UPDATE known_peers SET failures = failures + 1 WHERE url = ?", (url,))
            conn.execute(
                "DELETE FROM known_peers WHERE url = ? AND role = 'learned' AND failures >= ?", (url, self.prune_after)
            )


class SeenQueries:
    """Query ids this peer has handled, shared by all its gunicorn workers.

    In memory first; in SQLite too when the REST server runs more than one worker (shared), so a
    copy that lands on another worker is dropped as well. Nothing here must survive a crash: a
    restarted peer that handles an id again only answers it once more.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time, *, shared: bool = True) -> None:
        self.db = db
        self.clock = clock
        self.shared = shared
        self._ids: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, qid: str) -> bool:
        """Record qid; True only the first time any worker sees it.

        On a full disk nothing is recorded and every query counts as new: its TTL and its path
        still end it, at the cost of some duplicate hops until space is freed.
        """
        now = self.clock()
        with self._lock:
            if qid in self._ids:
                return False
            self._ids[qid] = now
            if len(self._ids) > 4096:  # ids are remembered SEEN_RETENTION seconds (the oldest go first)
                oldest = now - SEEN_RETENTION
                for old in [q for q, at in self._ids.items() if at < oldest] or list(self._ids)[:1024]:
                    del self._ids[old]
        if not self.shared:
            return True
        conn = self.db.connect()
        inserted = 1
        with self.db.unless_full("seen query ids"):
            inserted = conn.execute("INSERT OR IGNORE INTO seen_queries VALUES (?, ?)", (qid, now)).rowcount
            if inserted and hash(qid) % 64 == 0:  # forget old ids now and then
                conn.execute("DELETE FROM seen_queries WHERE at < ?", (now - SEEN_RETENTION,))
        return bool(inserted)


class TransferTotals:
    """Bytes moved by the gRPC process, per RPC; the REST app's /metrics reads them.

    One small write per finished transfer (not per chunk), so the counts survive across
    processes and restarts without touching the streaming path.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, rpc: str, nbytes: int) -> None:
        """Count one finished (or cut) transfer of nbytes (not on a full disk)."""
        with self.db.unless_full("transfer totals"):
            self.db.connect().execute(
                "INSERT INTO transfer_totals (rpc, bytes, calls) VALUES (?, ?, 1)"
                " ON CONFLICT(rpc) DO UPDATE SET bytes = bytes + excluded.bytes, calls = calls + 1",
                (rpc, nbytes),
            )

    def all(self) -> dict[str, tuple[int, int]]:
        """rpc -> (bytes, calls)."""
        rows = self.db.connect().execute("SELECT rpc, bytes, calls FROM transfer_totals").fetchall()
        return {r["rpc"]: (r["bytes"], r["calls"]) for r in rows}
