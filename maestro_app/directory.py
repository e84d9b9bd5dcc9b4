"""The Maestro's directory: peers, their files, their liveness. SQLite, no HTTP.

Liveness survives the Maestro's own restarts. A peer's expiry window counts from
`counted_from`: its last registration or heartbeat, or the Maestro's last start when the peer
was alive as the Maestro went down. While the Maestro runs, each worker writes the time into
`maestro_clock` every TICK seconds; a worker that starts and finds the last tick older than
RESTART_GAP knows the Maestro was down since then (a kill -9 included), and gives every peer
that was alive at that tick a fresh window from now. So the Maestro's downtime never counts as
missed beats, and a peer that was already dead before the crash stays dead.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.config import Settings
from common.db import Database
from common.errors import BadRequest, InsufficientStorage, NotFound, TooLarge
from common.fields import blake3_problem, mtime_problem, sha256_problem, size_problem
from common.names import check_name, check_peer_name

MIN_HEARTBEAT_INTERVAL = 0.05  # seconds: beats faster than 20 a second are a flood, not a heartbeat
DIRECTORY_PAGE = 1000  # files per /directory answer unless ?limit= asks for fewer or more
DIRECTORY_MAX_PAGE = 5000
log = logging.getLogger(__name__)
# seconds between a Maestro worker's clock writes: a restart takes longer than two (a process start),
# so every restart is seen, however short; with a tick each second, downtimes under 1.5 s went
# uncounted, and a storm of quick restarts added up to expired peers (heartbeats of 0.5 s: a 1.5 s window)
TICK = 0.25
RESTART_GAP = 2 * TICK  # a last tick older than this at a worker's start: the Maestro was down since

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY,
    rest_url TEXT NOT NULL,
    grpc_address TEXT NOT NULL,
    heartbeat_interval REAL NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    friends TEXT NOT NULL DEFAULT '{}',
    counted_from REAL  -- the expiry window counts from here (see the module docstring)
);
CREATE TABLE IF NOT EXISTS maestro_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tick REAL NOT NULL  -- the last time a worker of the Maestro was known to run
);
CREATE TABLE IF NOT EXISTS files (
    name TEXT NOT NULL,
    peer TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL,
    blake3 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, peer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_peer ON files(peer);
"""


FRIEND_ROLES = ("primary", "backup")


def parse_friends(raw: object) -> dict[str, str]:
    """Validate a registration's friends: {"primary": NAME, "backup": NAME}, each optional."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - set(FRIEND_ROLES):
        raise BadRequest("'friends' must be an object with 'primary' and/or 'backup'")
    return {role: check_peer_name(raw[role], f"friends.{role}") for role in FRIEND_ROLES if raw.get(role) is not None}


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    mtime: float
    sha256: str
    blake3: str = ""  # the fast lane verifies with it; "" from peers that do not send it

    @classmethod
    def parse(cls, raw: object, index: int) -> FileEntry:
        """Validate one file entry of a registration (the rules of common.names and common.fields)."""
        if not isinstance(raw, dict):
            raise BadRequest(f"files[{index}] must be an object")
        try:
            name = check_name(raw.get("name"))
        except BadRequest as err:
            raise BadRequest(f"files[{index}].name: {err.detail}") from None
        size, mtime, sha = raw.get("size"), raw.get("mtime"), raw.get("sha256")
        b3 = raw.get("blake3") or ""  # optional: peers from before BLAKE3 do not send it
        for key, problem in (
            ("size", size_problem(size)),
            ("mtime", mtime_problem(mtime)),
            ("sha256", sha256_problem(sha)),
            ("blake3", blake3_problem(b3)),
        ):
            if problem is not None:
                raise BadRequest(f"files[{index}].{key} {problem}")
        return cls(name, size, float(mtime), sha, b3)  # type: ignore[arg-type]


def parse_files(raw: object, max_files: int) -> list[FileEntry]:
    """A registration's file list: at most max_files entries (413 above), each valid, no name twice."""
    if not isinstance(raw, list):
        raise BadRequest("'files' must be a list")
    if len(raw) > max_files:
        raise TooLarge(
            f"{len(raw)} files in one registration; this network takes at most {max_files} per peer "
            "(settings.max_files_per_peer)"
        )
    entries: list[FileEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        entry = FileEntry.parse(item, i)
        if entry.name in seen:
            raise BadRequest(
                f"files[{i}].name: {entry.name!r} is listed twice (files[{seen[entry.name]}]), "
                "perhaps in two Unicode spellings"
            )
        seen[entry.name] = i
        entries.append(entry)
    return entries


def check_interval(value: object, maximum: float) -> float | None:
    """A peer's announced heartbeat interval: None (the default) or seconds in MIN_HEARTBEAT_INTERVAL..maximum."""
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not MIN_HEARTBEAT_INTERVAL <= value <= maximum
    ):
        raise BadRequest(
            f"'heartbeat_interval' must be a number of seconds within {MIN_HEARTBEAT_INTERVAL:g}..{maximum:g} "
            "(settings.max_heartbeat_interval)"
        )
    return float(value)


class Directory:
    """Who holds which file, and who is alive. Shared by every gunicorn worker."""

    def __init__(
        self,
        path: str,
        *,
        default_interval: float,
        expire_after_beats: float,
        clock: Callable[[], float] = time.time,
        max_files: int = Settings.max_files_per_peer,
        max_interval: float = Settings.max_heartbeat_interval,
    ) -> None:
        self.db = Database(path, SCHEMA)
        self.db.add_column("peers", "friends", "TEXT NOT NULL DEFAULT '{}'")  # directories from before friends
        self.db.add_column("files", "blake3", "TEXT NOT NULL DEFAULT ''")  # directories from before BLAKE3
        self.max_files = max_files
        self.max_interval = max_interval
        self.default_interval = default_interval
        self.expire_after_beats = expire_after_beats
        self.clock = clock
        self._last_tick = clock()  # the last clock write that got through (this worker's)
        self._stopped_at: float | None = None  # set while this worker cannot write: see now()
        self.db.add_column("peers", "counted_from", "REAL")  # directories from before the restart rule
        with self.db.unless_full("the upgrade of old rows"):
            self.db.connect().execute("UPDATE peers SET counted_from = last_seen WHERE counted_from IS NULL")

    def _alive_since(self) -> str:
        """SQL condition: a peer heard from within expire_after_beats of its interval (Maestro downtime aside)."""
        return "(counted_from >= :now - heartbeat_interval * :beats)"

    def started(self) -> float:
        """A worker starts: if the Maestro was down, give the peers alive then a fresh window.

        Returns how long the Maestro was down (0.0 when it was not, or on a new directory). On a
        full disk nothing is written and the worker starts with its clock stopped (see tick).
        """
        now = self.clock()
        row = self.db.connect().execute("SELECT tick FROM maestro_clock WHERE id = 1").fetchone()
        down = 0.0 if row is None else max(0.0, now - row["tick"])
        try:
            with self.db.connect() as conn:
                if down > RESTART_GAP:
                    self._fresh_windows(conn, now, row["tick"])
                conn.execute("INSERT OR REPLACE INTO maestro_clock (id, tick) VALUES (1, ?)", (now,))
        except InsufficientStorage:
            self._stop_clock(now if row is None else row["tick"])
            return 0.0
        self._last_tick = now
        return down if down > RESTART_GAP else 0.0

    def _fresh_windows(self, conn, now: float, since: float) -> None:
        """Give every peer that was alive at `since` a fresh expiry window from now."""
        conn.execute(
            "UPDATE peers SET counted_from = :now WHERE counted_from >= :since - heartbeat_interval * :beats",
            {"now": now, "since": since, "beats": self.expire_after_beats},
        )

    def _stop_clock(self, at: float) -> None:
        if self._stopped_at is None:
            self._stopped_at = at
            log.warning("the disk is full: registrations and heartbeats are refused (507); liveness stands still")

    def now(self) -> float:
        """The time liveness is judged at: the clock, or while this worker cannot write, its last tick.

        A Maestro that cannot record heartbeats does not count the beats it could not record
        against the peers (as with its own downtime): while its disk is full, who was alive
        stays alive and who was dead stays dead.
        """
        stopped = self._stopped_at
        return self.clock() if stopped is None else stopped

    def tick(self) -> None:
        """Note that the Maestro is running now (a worker calls this every TICK seconds).

        On a full disk the clock stops (see now); at the first tick that gets through again, the
        peers alive when it stopped get fresh windows, as after a restart.
        """
        now = self.clock()
        try:
            with self.db.connect() as conn:
                if self._stopped_at is not None:
                    self._fresh_windows(conn, now, self._stopped_at)
                conn.execute("INSERT OR REPLACE INTO maestro_clock (id, tick) VALUES (1, ?)", (now,))
        except InsufficientStorage:
            self._stop_clock(self._last_tick)
            return
        if self._stopped_at is not None:
            log.info("the disk takes writes again: registrations and heartbeats are accepted")
            self._stopped_at = None
        self._last_tick = now

    def keep_time(self, stop: threading.Event | None = None) -> threading.Thread:
        """Tick every TICK seconds on a daemon thread (a greenlet under gevent) until stop is set."""
        stop = stop or threading.Event()

        def run() -> None:
            while not stop.wait(TICK):
                try:
                    self.tick()
                except sqlite3.Error as err:
                    log.warning("cannot write the Maestro's clock: %s", err)

        thread = threading.Thread(target=run, name="maestro-clock", daemon=True)
        thread.start()
        return thread

    def _params(self, **extra) -> dict:
        return {"now": self.now(), "beats": self.expire_after_beats, **extra}

    def register(
        self,
        name: str,
        rest_url: str,
        grpc_address: str,
        files: list[FileEntry],
        heartbeat_interval: float | None = None,
        friends: dict[str, str] | None = None,
    ) -> None:
        """Record a peer and replace its whole file list in one transaction."""
        check_peer_name(name)
        if len(files) > self.max_files:
            raise TooLarge(f"at most {self.max_files} files per peer (settings.max_files_per_peer)")
        interval = heartbeat_interval or self.default_interval
        now = self.clock()
        with self.db.connect() as conn:
            conn.execute(
                "INSERT INTO peers (name, rest_url, grpc_address, heartbeat_interval, registered_at,"
                " last_seen, friends, counted_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " rest_url=excluded.rest_url, grpc_address=excluded.grpc_address,"
                " heartbeat_interval=excluded.heartbeat_interval, last_seen=excluded.last_seen,"
                " friends=excluded.friends, counted_from=excluded.counted_from",
                (name, rest_url, grpc_address, interval, now, now, json.dumps(friends or {}), now),
            )
            conn.execute("DELETE FROM files WHERE peer = ?", (name,))
            conn.executemany(
                "INSERT OR REPLACE INTO files (name, peer, size, mtime, sha256, blake3) VALUES (?, ?, ?, ?, ?, ?)",
                [(f.name, name, f.size, f.mtime, f.sha256, f.blake3) for f in files],
            )

    def heartbeat(self, name: str) -> None:
        """Mark a peer as just seen; NotFound if it never registered."""
        now = self.clock()
        cur = self.db.connect().execute(
            "UPDATE peers SET last_seen = ?, counted_from = ? WHERE name = ?", (now, now, name)
        )
        if cur.rowcount == 0:
            raise NotFound(f"peer {name!r} is not registered; register first")

    def peers(self) -> list[dict]:
        """Every registered peer: liveness, seconds since last heard (`age`), friends, file count."""
        params = self._params()
        rows = (
            self.db.connect()
            .execute(
                f"SELECT p.name, p.rest_url, p.grpc_address, p.last_seen, p.heartbeat_interval,"
                f" {self._alive_since()} AS alive,"
                f" (SELECT COUNT(*) FROM files f WHERE f.peer = p.name) AS files, p.friends"
                f" FROM peers p ORDER BY p.name",
                params,
            )
            .fetchall()
        )
        return [
            {
                **dict(r),
                "alive": bool(r["alive"]),
                "age": round(max(0.0, params["now"] - r["last_seen"]), 3),
                "friends": json.loads(r["friends"]),
            }
            for r in rows
        ]

    LOCATE_SQL = (
        "SELECT p.name, p.rest_url, p.grpc_address, p.last_seen, f.size, f.mtime, f.sha256, f.blake3"
        " FROM files f JOIN peers p ON p.name = f.peer"
        " WHERE f.name = ? AND p.counted_from >= ? - p.heartbeat_interval * ?"
        " ORDER BY p.last_seen DESC"
    )

    def locate(self, filename: str) -> list[dict]:
        """Live peers holding filename, with the file's size, mtime, sha256 and BLAKE3."""
        # One constant statement: sqlite3's statement cache reuses it on this thread's connection.
        cur = self.db.connect().execute(self.LOCATE_SQL, (filename, self.now(), self.expire_after_beats))
        return [dict(r) for r in cur.fetchall()]

    def directory(self, limit: int = DIRECTORY_PAGE, after: str = "") -> dict:
        """One page of the directory: up to limit files named after `after`, each with its holders.

        {"files": [{"name", "peers": [...]}], "count", "total", "next"}: `next` is the name to pass
        as `after` for the following page (None on the last), `total` the distinct files in all.
        """
        conn = self.db.connect()
        rows = conn.execute(
            f"SELECT f.name AS file, p.name, p.grpc_address, f.size, f.sha256,"
            f" {self._alive_since()} AS alive"
            f" FROM files f JOIN peers p ON p.name = f.peer"
            f" WHERE f.name IN (SELECT DISTINCT name FROM files WHERE name > :after ORDER BY name LIMIT :limit)"
            f" ORDER BY f.name, p.name",
            self._params(after=after, limit=limit),
        ).fetchall()
        files: dict[str, list[dict]] = {}
        for r in rows:
            files.setdefault(r["file"], []).append(
                {
                    "name": r["name"],
                    "grpc_address": r["grpc_address"],
                    "size": r["size"],
                    "sha256": r["sha256"],
                    "alive": bool(r["alive"]),
                }
            )
        last = next(reversed(files), None)
        more = last is not None and conn.execute("SELECT 1 FROM files WHERE name > ? LIMIT 1", (last,)).fetchone()
        total = conn.execute("SELECT COUNT(DISTINCT name) FROM files").fetchone()[0]
        page = [{"name": name, "peers": holders} for name, holders in files.items()]
        return {"files": page, "count": len(page), "total": total, "next": last if more else None}

    def counts(self) -> dict:
        """Numbers for the status page and metrics."""
        row = (
            self.db.connect()
            .execute(
                f"SELECT (SELECT COUNT(*) FROM peers) AS peers,"
                f" (SELECT COUNT(*) FROM peers WHERE {self._alive_since()}) AS alive,"
                f" (SELECT COUNT(*) FROM files) AS files",
                self._params(),
            )
            .fetchone()
        )
        return dict(row)
