"""A peer's shared folder: the truth for its files, with sha256 and BLAKE3 cached by size, mtime, inode and ctime.

What the index lists is what the peer serves: SharedFolder (storage.py) decides which entries
are shared (plain NFC names, regular files with one link, fields within the wire's bounds),
at most max_files of them (by name), and every hash is read from a safely opened descriptor.

A cached digest is trusted only while the file's size, mtime, inode and ctime are what they were
when it was hashed: writing a file changes its ctime even when its mtime is put back (os.utime),
so such a change is hashed again at the next look. Bytes can also change with no trace in the
status at all (a failing disk, a bit flipped under the file system): `verify` hashes a file
again whatever its status says (the scrub, POST /refresh and POST /recheck call it). A file
whose content changed while its size, mtime and inode stayed the same is taken for a damaged
copy and **withheld**: not listed, not registered, not served, until its owner replaces it or
touches it (any new mtime makes it a new version, hashed and shared again).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from common.config import NodeConfig, Settings
from common.db import Database
from common.errors import NotFound, P2PError
from common.files import digest_fd
from common.green import run_blocking
from peer_app.storage import SharedFolder

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    ino INTEGER NOT NULL DEFAULT 0,
    blake3 TEXT NOT NULL DEFAULT '',
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    checked REAL NOT NULL DEFAULT 0,        -- when the bytes were last hashed (wall clock)
    changed INTEGER NOT NULL DEFAULT 0,     -- whether that hash found other bytes than the one before
    withheld INTEGER NOT NULL DEFAULT 0     -- 1: content changed under the same size, mtime and inode
);
CREATE TABLE IF NOT EXISTS rechecks (      -- POST /recheck: when each file was last hashed for it
    name TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
"""
HASH_TRIES = 3  # reads of a file that keeps changing while it is hashed, before it is left for the next look
INSERT = (
    "INSERT OR REPLACE INTO file_hashes (name, size, mtime_ns, sha256, ino, blake3, ctime_ns, checked, changed,"
    " withheld) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
ROW = "SELECT size, mtime_ns, sha256, ino, blake3, ctime_ns, checked, changed, withheld FROM file_hashes WHERE name = ?"


class Record(NamedTuple):
    """One row of the hash cache (INSERT's columns, in order)."""

    name: str
    size: int
    mtime_ns: int
    sha256: str
    ino: int
    blake3: str
    ctime_ns: int
    checked: float
    changed: int
    withheld: int

    def info(self) -> FileInfo:
        return FileInfo(self.name, self.size, self.mtime_ns / 1e9, self.sha256, self.blake3)

    def check(self) -> Check:
        return Check(self.name, self.size, self.sha256, self.blake3, bool(self.changed), not self.withheld)


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float
    sha256: str
    blake3: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """What hashing one file's bytes again found (POST /recheck's answer)."""

    file: str
    size: int
    sha256: str
    blake3: str
    changed: bool  # other bytes than the digest advertised before
    shared: bool  # False: withheld (its bytes changed with no trace in its status)

    def to_json(self) -> dict:
        return asdict(self)


def withheld_error(name: str) -> NotFound:
    return NotFound(
        f"{name!r} is withheld on this peer: its bytes changed while its size, mtime and inode stayed the same "
        "(a damaged copy?); its owner may replace it, or touch it to share it as it is"
    )


class SharedIndex:
    """Lists the shared folder; hashes a file when its status changed, or when asked to verify it."""

    def __init__(
        self,
        shared_dir: str | os.PathLike,
        db: Database,
        *,
        max_files: int = Settings.max_files_per_peer,
        allow_hardlinks: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        Path(shared_dir).mkdir(parents=True, exist_ok=True)
        self.folder = SharedFolder(shared_dir, allow_hardlinks=allow_hardlinks)
        self.max_files = max_files
        self.db = db
        self.clock = clock
        self._warned_over = 0
        if not db.connect().read_only:
            with db.unless_full("the hash cache's table"):
                db.connect().executescript(SCHEMA)
                # caches from before these were kept: every row is hashed once more
                db.add_column("file_hashes", "ino", "INTEGER NOT NULL DEFAULT 0")
                db.add_column("file_hashes", "blake3", "TEXT NOT NULL DEFAULT ''")
                db.add_column("file_hashes", "ctime_ns", "INTEGER NOT NULL DEFAULT 0")
                db.add_column("file_hashes", "checked", "REAL NOT NULL DEFAULT 0")
                db.add_column("file_hashes", "changed", "INTEGER NOT NULL DEFAULT 0")
                db.add_column("file_hashes", "withheld", "INTEGER NOT NULL DEFAULT 0")

    @classmethod
    def for_node(cls, config: NodeConfig, db: Database) -> SharedIndex:
        """The index of a peer's shared folder, with its node's limits."""
        return cls(
            config.shared_dir,
            db,
            max_files=config.settings.max_files_per_peer,
            allow_hardlinks=config.security.allow_hardlinks,
        )

    def _entries(self) -> list[tuple[str, os.stat_result]]:
        """The shared files, at most max_files of them (the first by name)."""
        entries = sorted(self.folder.entries())
        if len(entries) > self.max_files:
            if self._warned_over != len(entries):
                log.warning(
                    "%s holds %d shareable files; only the first %d by name are shared (settings.max_files_per_peer)",
                    self.folder.path,
                    len(entries),
                    self.max_files,
                )
                self._warned_over = len(entries)
            entries = entries[: self.max_files]
        return entries

    def signature(self) -> tuple:
        """A cheap fingerprint of the folder: changes when any file is added, removed, edited or written to."""
        return tuple((name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) for name, st in self._entries())

    def scan(self) -> list[FileInfo]:
        """Every shared file with its digests (from the cache while its status matches); withheld ones left out."""
        conn = self.db.connect()
        cached = {r["name"]: r for r in conn.execute("SELECT * FROM file_hashes")}
        entries = self._entries()
        files: list[FileInfo] = []
        fresh: list[Record] = []
        for name, st in entries:
            row = cached.get(name)
            if row is not None and _matches(row, st):
                if not row["withheld"]:
                    files.append(FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"], row["blake3"]))
                continue
            try:
                fh, st, name = self.folder.open(name)
            except (P2PError, OSError):  # changed or removed since we listed it: not shared now
                continue
            with fh:
                record = self._hash(name, st, fh, row)
            fresh.append(record)
            if not record.withheld:
                files.append(record.info())
        gone = set(cached) - {name for name, _ in entries} - {r.name for r in fresh}
        if fresh or gone:
            with self.db.unless_full("the hash cache"), self.db.connect() as tx:
                tx.executemany(INSERT, fresh)
                tx.executemany("DELETE FROM file_hashes WHERE name = ?", [(n,) for n in gone])
        return files

    def get(self, name: str) -> FileInfo | None:
        """The named file's info (hashing only that file if needed), or None when it is not shared (or withheld)."""
        st = self.folder.stat(name)
        if st is None:
            return None
        row = self._row(name)
        if _matches(row, st):
            if row["withheld"]:
                return None
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"], row["blake3"])
        try:
            fh, st, name = self.folder.open(name)
        except (P2PError, OSError):  # changed since the stat: not shared now
            return None
        with fh:
            try:
                return self.lookup(name, st, fh)
            except NotFound:
                return None

    def lookup(self, name: str, st: os.stat_result, fh: BinaryIO) -> FileInfo:
        """Info of the shared file opened as fh, whose fstat is st; hashes fh only if the cache is stale.

        One row, not a folder scan: what every transfer request needs. The hash is always of
        the opened file, never of whatever the name points to a moment later. NotFound when
        the file is withheld.
        """
        row = self._row(name)
        if _matches(row, st):
            sha, b3, withheld = row["sha256"], row["blake3"], row["withheld"]
        else:
            record = self._hash(name, st, fh, row)
            self._store(record)
            sha, b3, withheld = record.sha256, record.blake3, record.withheld
        if withheld:
            raise withheld_error(name)
        return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha, b3)

    def verify(self, name: str, pace: Callable[[int], None] | None = None) -> Check | None:
        """Hash the named file's bytes again whatever its status says; None when it is not shared.

        pace(n) is called after each block of n bytes is read (the scrub's rate limit).
        """
        try:
            fh, st, name = self.folder.open(name)
        except (P2PError, OSError):
            return None
        with fh:
            row = self._row(name)
            record = self._hash(name, st, fh, row, pace=pace)
        self._store(record)
        return record.check()

    def recheck(self, name: str, window: float, pace: Callable[[int], None] | None = None) -> tuple[Check, bool] | None:
        """(what hashing name again found, True), or (the last result, False) when name was rechecked
        within the last window seconds (by any process) and its status has not changed since; None
        when name is not shared."""
        if self.folder.stat(name) is None:  # nothing to hash: no row kept for a name anyone may send
            return None
        now = self.clock()
        claimed = True
        with self.db.unless_full("recheck times"):
            claimed = bool(
                self.db.connect()
                .execute(
                    "INSERT INTO rechecks (name, at) VALUES (:name, :now) ON CONFLICT(name) DO UPDATE SET at = :now"
                    " WHERE at <= :now - :window",
                    {"name": name, "now": now, "window": window},
                )
                .rowcount
            )
        if not claimed:
            st = self.folder.stat(name)
            row = self._row(name) if st is not None else None
            if st is None:
                return None
            if row is not None and _matches(row, st):
                return Record(name, *row).check(), False
        check = self.verify(name, pace=pace)
        return None if check is None else (check, True)

    def scrub_order(self) -> list[tuple[str, int]]:
        """(name, size) of the shared files not withheld, the longest unchecked first (never hashed: first of all)."""
        rows = self.db.connect().execute("SELECT name, checked, withheld FROM file_hashes").fetchall()
        known = {r["name"]: (r["checked"], r["withheld"]) for r in rows}
        entries = [(name, st.st_size) for name, st in self._entries() if not known.get(name, (0, 0))[1]]
        return sorted(entries, key=lambda entry: known.get(entry[0], (0.0, 0))[0])

    def remember(self, name: str, sha256: str, st: os.stat_result, blake3: str) -> None:
        """Cache the digests of a file whose status is st (one just written, say), so no scan re-reads it."""
        self._store(
            Record(name, st.st_size, st.st_mtime_ns, sha256, st.st_ino, blake3, st.st_ctime_ns, self.clock(), 0, 0)
        )

    def _hash(self, name: str, st: os.stat_result, fh: BinaryIO, row, pace=None) -> Record:
        """Hash fh's bytes; the cache row to store for them, judged against the row before (see the module doc).

        A file written while it is read (its status moved meanwhile) is hashed again, as it is
        now: bytes read across a rewrite are neither the old file nor a damaged copy. One still
        being written after HASH_TRIES reads gets no verdict: not withheld, and a row that
        matches no status (inode and ctime -1), so the next look hashes it again as a new version.
        """
        for _ in range(HASH_TRIES):
            sha, b3 = run_blocking(functools.partial(digest_fd, fh.fileno(), with_blake3=True, pace=pace))
            after = os.fstat(fh.fileno())
            if _status(after) == _status(st):
                break
            st = after
        else:
            log.info("%s is being written: hashed again at the next look", name)
            return Record(name, st.st_size, st.st_mtime_ns, sha, -1, b3, -1, self.clock(), 0, 0)  # matches nothing
        same_status = (
            row is not None
            and row["size"] == st.st_size
            and row["mtime_ns"] == st.st_mtime_ns
            and row["ino"] == st.st_ino
        )
        changed = row is not None and row["sha256"] != sha
        withheld = same_status and (changed or bool(row["withheld"]))
        if changed and withheld and not row["withheld"]:
            log.error(
                "%s: its bytes changed while its size, mtime and inode stayed the same (sha256 %s, was %s): "
                "withheld until it is replaced or touched",
                name,
                sha[:12],
                row["sha256"][:12],
            )
        elif changed and not same_status:
            log.info("%s changed: sha256 %s (was %s)", name, sha[:12], row["sha256"][:12])
        return Record(
            name,
            st.st_size,
            st.st_mtime_ns,
            sha,
            st.st_ino,
            b3,
            st.st_ctime_ns,
            self.clock(),
            int(changed),
            int(withheld),
        )

    def _store(self, record: Record) -> None:
        with self.db.unless_full("the hash cache"), self.db.connect() as conn:
            conn.execute(INSERT, record)

    def _row(self, name: str):
        return self.db.connect().execute(ROW, (name,)).fetchone()


def _status(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file's bytes may have changed: size, mtime, ctime and inode."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _matches(row, st: os.stat_result) -> bool:
    """True when a cached row still describes the file (same size, mtime, inode and ctime) and has both digests."""
    return (
        row is not None
        and row["size"] == st.st_size
        and row["mtime_ns"] == st.st_mtime_ns
        and row["ino"] == st.st_ino
        and row["ctime_ns"] == st.st_ctime_ns
        and bool(row["blake3"])
    )
