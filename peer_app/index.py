"""A peer's shared folder: the truth for its files, with sha256 and BLAKE3 cached by size, mtime and inode.

What the index lists is what the peer serves: SharedFolder (storage.py) decides which entries
are shared (plain NFC names, regular files with one link, fields within the wire's bounds),
at most max_files of them (by name), and every hash is read from a safely opened descriptor.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from common.config import NodeConfig, Settings
from common.db import Database
from common.errors import P2PError
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
    blake3 TEXT NOT NULL DEFAULT ''
);
"""
INSERT = "INSERT OR REPLACE INTO file_hashes (name, size, mtime_ns, sha256, ino, blake3) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float
    sha256: str
    blake3: str = ""

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
        db.connect().executescript(SCHEMA)
        # caches from before the inode or BLAKE3 were kept: every row is hashed once more
        db.add_column("file_hashes", "ino", "INTEGER NOT NULL DEFAULT 0")
        db.add_column("file_hashes", "blake3", "TEXT NOT NULL DEFAULT ''")

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
        """Every shared file with its digests (from the cache when size, mtime and inode match)."""
        conn = self.db.connect()
        cached = {r["name"]: r for r in conn.execute("SELECT * FROM file_hashes")}
        files, fresh = [], []
        for name, st in self._entries():
            row = cached.get(name)
            if row is not None and _matches(row, st):
                files.append(FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"], row["blake3"]))
                continue
            try:
                fh, st, name = self.folder.open(name)
            except (P2PError, OSError):  # changed or removed since we listed it: not shared now
                continue
            with fh:
                sha, b3 = run_blocking(functools.partial(digest_fd, fh.fileno(), with_blake3=True))
            fresh.append((name, st.st_size, st.st_mtime_ns, sha, st.st_ino, b3))
            files.append(FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha, b3))
        gone = set(cached) - {f.name for f in files}
        if fresh or gone:
            with conn:
                conn.executemany(INSERT, fresh)
                conn.executemany("DELETE FROM file_hashes WHERE name = ?", [(n,) for n in gone])
        return files

    def get(self, name: str) -> FileInfo | None:
        """The named file's info (hashing only that file if needed), or None when it is not shared."""
        st = self.folder.stat(name)
        if st is None:
            return None
        row = self._row(name)
        if _matches(row, st):
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"], row["blake3"])
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
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"], row["blake3"])
        sha, b3 = run_blocking(functools.partial(digest_fd, fh.fileno(), with_blake3=True))
        self.remember(name, sha, st, b3)
        return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha, b3)

    def remember(self, name: str, sha256: str, st: os.stat_result, blake3: str) -> None:
        """Cache the digests of a file whose status is st (one just written, say), so no scan re-reads it."""
        with self.db.connect() as conn:
            conn.execute(INSERT, (name, st.st_size, st.st_mtime_ns, sha256, st.st_ino, blake3))

    def _row(self, name: str):
        return (
            self.db.connect()
            .execute("SELECT size, mtime_ns, sha256, ino, blake3 FROM file_hashes WHERE name = ?", (name,))
            .fetchone()
        )


def _matches(row, st: os.stat_result) -> bool:
    """True when a cached row still describes the file (same size, mtime and inode) and has both digests."""
    return (
        row is not None
        and row["size"] == st.st_size
        and row["mtime_ns"] == st.st_mtime_ns
        and row["ino"] == st.st_ino
        and bool(row["blake3"])
    )
