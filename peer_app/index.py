"""A peer's shared folder: the truth for its files, with sha256 cached by size, mtime and inode.

What the index lists is what the peer serves: SharedFolder (storage.py) decides which entries
are shared (plain NFC names, regular files with one link, fields within the wire's bounds),
at most max_files of them (by name), and every hash is read from a safely opened descriptor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from common.config import NodeConfig, Settings
from common.db import Database
from common.errors import P2PError
from common.files import sha256_fd
from peer_app.storage import SharedFolder

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    ino INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


class SharedIndex:
    """Lists the shared folder; hashes a file only when its size, mtime or inode changed."""

    def __init__(
        self,
        shared_dir: str | os.PathLike,
        db: Database,
        *,
        max_files: int = Settings.max_files_per_peer,
        allow_hardlinks: bool = False,
    ) -> None:
        Path(shared_dir).mkdir(parents=True, exist_ok=True)
        self.folder = SharedFolder(shared_dir, allow_hardlinks=allow_hardlinks)
        self.max_files = max_files
        self.db = db
        self._warned_over = 0
        conn = db.connect()
        conn.executescript(SCHEMA)
        if "ino" not in {row[1] for row in conn.execute("PRAGMA table_info(file_hashes)")}:
            with conn:  # a cache from before the inode was kept: add it (every row is hashed once more)
                conn.execute("ALTER TABLE file_hashes ADD COLUMN ino INTEGER NOT NULL DEFAULT 0")

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
        """A cheap fingerprint of the folder: changes when any file is added, removed or edited."""
        return tuple((name, st.st_size, st.st_mtime_ns, st.st_ino) for name, st in self._entries())

    def scan(self) -> list[FileInfo]:
        """Every shared file with its sha256 (from the cache when size, mtime and inode match)."""
        conn = self.db.connect()
        cached = {r["name"]: r for r in conn.execute("SELECT * FROM file_hashes")}
        files, fresh = [], []
        for name, st in self._entries():
            row = cached.get(name)
            if _matches(row, st):
                files.append(FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"]))
                continue
            try:
                fh, st, name = self.folder.open(name)
            except (P2PError, OSError):  # changed or removed since we listed it: not shared now
                continue
            with fh:
                sha = sha256_fd(fh.fileno())
            fresh.append((name, st.st_size, st.st_mtime_ns, sha, st.st_ino))
            files.append(FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha))
        gone = set(cached) - {f.name for f in files}
        if fresh or gone:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)", fresh)
                conn.executemany("DELETE FROM file_hashes WHERE name = ?", [(n,) for n in gone])
        return files

    def get(self, name: str) -> FileInfo | None:
        """The named file's info (hashing only that file if needed), or None when it is not shared."""
        st = self.folder.stat(name)
        if st is None:
            return None
        row = self._row(name)
        if _matches(row, st):
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"])
        try:
            fh, st, name = self.folder.open(name)
        except (P2PError, OSError):  # changed since the stat: not shared now
            return None
        with fh:
            return self.lookup(name, st, fh)

    def lookup(self, name: str, st: os.stat_result, fh: BinaryIO) -> FileInfo:
        """Info of the shared file opened as fh, whose fstat is st; hashes fh only if the cache is stale.

        One row, not a folder scan: what every transfer request needs. The hash is always of
        the opened file, never of whatever the name points to a moment later.
        """
        row = self._row(name)
        if _matches(row, st):
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"])
        sha = sha256_fd(fh.fileno())
        self.remember(name, sha, st)
        return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha)

    def remember(self, name: str, sha256: str, st: os.stat_result) -> None:
        """Cache the hash of a file whose status is st (one just written, say), so no scan re-reads it."""
        with self.db.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)",
                (name, st.st_size, st.st_mtime_ns, sha256, st.st_ino),
            )

    def _row(self, name: str):
        return (
            self.db.connect()
            .execute("SELECT size, mtime_ns, sha256, ino FROM file_hashes WHERE name = ?", (name,))
            .fetchone()
        )


def _matches(row, st: os.stat_result) -> bool:
    """True when a cached hash row still describes the file (same size, mtime and inode)."""
    return (
        row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns and row["ino"] == st.st_ino
    )
