"""SQLite connections shared by gunicorn workers and restarts (WAL, busy timeout), and what a full disk does to them.

A full disk never crashes a node: a write SQLite cannot make raises InsufficientStorage (HTTP
507, gRPC RESOURCE_EXHAUSTED) instead of sqlite3's "database or disk is full", and reads go on.
When the disk is so full that a connection cannot even be opened (a WAL database needs its
`-shm` index file, which a clean stop removes and the next open must create), the connection
falls back to reading the database file as it is (`immutable=1`: no index, no locks, no
writes) and tries a normal open again at most once per REOPEN_EVERY seconds, so writes come
back by themselves once space is freed. Bookkeeping that may be skipped (a cache, a clock, a
counter) runs inside `Database.unless_full`, which logs one line when the disk fills and one
when writes get through again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from common.errors import InsufficientStorage
from common.green import os_thread_local

log = logging.getLogger(__name__)

REOPEN_EVERY = 1.0  # seconds between tries of a normal open while a connection reads only
NEARLY_FULL = 1024 * 1024  # free bytes under which any SQLite I/O error is taken for a full disk
_FULL_NAMES = frozenset({"SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"})


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged process may still write on the file system holding path."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full(err: sqlite3.Error, path: str) -> bool:
    """Whether err is SQLite failing for want of disk space (on the file system of path)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    if name in _FULL_NAMES or "database or disk is full" in str(err):
        return True
    if name.startswith("SQLITE_IOERR"):
        try:
            return free_bytes(os.path.dirname(path) or ".") < NEARLY_FULL
        except OSError:
            return False
    return False


def full_error(path: str) -> InsufficientStorage:
    return InsufficientStorage(f"this node's disk is full: its database ({os.path.basename(path)}) cannot be written")


class Database:
    """A per-thread SQLite connection to one file, created with a schema.

    Per OS thread: under gevent the greenlets of a worker share one connection (sqlite3 calls
    never yield, so no two transactions interleave), instead of opening one per request.
    """

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = os_thread_local()
        self._failing: set[str] = set()
        conn = self.connect()
        if not conn.read_only:
            with self.unless_full("the schema"):
                conn.executescript(schema)

    def add_column(self, table: str, column: str, definition: str) -> None:
        """Give a table written by an older version its new column (once, whichever process or worker is first)."""
        conn = self.connect()
        if column in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
            return
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except sqlite3.OperationalError as err:  # another worker or process added it first
            if "duplicate column" not in str(err):
                raise

    def connect(self) -> _Conn:
        """Return this thread's connection, opening it on first use (read-only while the disk is too full)."""
        conn: _Conn | None = getattr(self._local, "conn", None)
        if conn is not None and not (conn.read_only and conn.reopen_due()):
            return conn
        try:
            fresh = _Conn(self._open(), self.path)
        except sqlite3.Error as err:
            if not disk_full(err, self.path) or not os.path.exists(self.path):
                raise
            if conn is not None:
                conn.tried()
                return conn
            log.warning("%s: the disk is full; reading the database as it is until space is freed", self.path)
            fresh = _Conn(self._open_immutable(), self.path, read_only=True)
        else:
            if conn is not None:
                log.info("%s: space was freed; the database is writable again", self.path)
                conn.close()
        self._local.conn = fresh
        return fresh

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA mmap_size=268435456")  # reads straight from the page cache
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the WAL index now
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_immutable(self) -> sqlite3.Connection:
        uri = f"file:{quote(self.path)}?immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    @contextlib.contextmanager
    def unless_full(self, what: str) -> Iterator[None]:
        """Run a write that may be skipped: on a full disk, log once (per what) and go on without it."""
        try:
            yield
        except InsufficientStorage:
            if what not in self._failing:
                self._failing.add(what)
                log.warning("%s: the disk is full; %s is not written until space is freed", self.path, what)
            return
        if self._failing and what in self._failing:
            self._failing.discard(what)
            log.info("%s: %s is written again", self.path, what)


class _Conn:
    """A connection whose `with` block is one IMMEDIATE transaction; a full disk raises InsufficientStorage."""

    def __init__(self, conn: sqlite3.Connection, path: str, *, read_only: bool = False) -> None:
        self._conn = conn
        self.path = path
        self.read_only = read_only
        self._next_try = time.monotonic() + REOPEN_EVERY

    def reopen_due(self) -> bool:
        return time.monotonic() >= self._next_try

    def tried(self) -> None:
        self._next_try = time.monotonic() + REOPEN_EVERY

    def __getattr__(self, attr):
        return getattr(self._conn, attr)

    def _failed(self, err: sqlite3.Error) -> Exception:
        if (self.read_only and getattr(err, "sqlite_errorname", "") == "SQLITE_READONLY") or disk_full(err, self.path):
            return full_error(self.path)
        return err

    def execute(self, sql: str, parameters=()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, parameters)
        except sqlite3.OperationalError as err:
            raise self._failed(err) from None

    def executemany(self, sql: str, parameters) -> sqlite3.Cursor:
        try:
            return self._conn.executemany(sql, parameters)
        except sqlite3.OperationalError as err:
            raise self._failed(err) from None

    def executescript(self, script: str) -> sqlite3.Cursor:
        try:
            return self._conn.executescript(script)
        except sqlite3.OperationalError as err:
            raise self._failed(err) from None

    def __enter__(self) -> _Conn:
        if self.read_only:
            raise full_error(self.path)
        self.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        else:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
