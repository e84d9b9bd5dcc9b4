"""SQLite connections shared by gunicorn workers and restarts (WAL, busy timeout)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.green import os_thread_local


class Database:
    """A per-thread SQLite connection to one file, created with a schema.

    Per OS thread: under gevent the greenlets of a worker share one connection (sqlite3 calls
    never yield, so no two transactions interleave), instead of opening one per request.
    """

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = os_thread_local()
        self.connect().executescript(schema)

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

    def connect(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA mmap_size=268435456")  # reads straight from the page cache
            self._local.conn = _Conn(conn)
            conn = self._local.conn
        return conn


class _Conn:
    """A connection whose `with` block is one IMMEDIATE transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, attr):
        return getattr(self._conn, attr)

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
