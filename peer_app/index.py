"""A peer's shared folder: the truth for its files, with sha256 cached by size and mtime."""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from common.db import Database
from common.files import sha256_file
from peer_app.storage import TMP_PREFIX

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
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
    """Lists the shared folder; hashes a file only when its size or mtime changed."""

    def __init__(self, shared_dir: str | os.PathLike, db: Database) -> None:
        self.folder = Path(shared_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = db
        db.connect().executescript(SCHEMA)

    def _entries(self) -> list[os.DirEntry]:
        """Regular, visible files directly in the folder (symlinks are not shared)."""
        with os.scandir(self.folder) as it:
            return [
                e
                for e in it
                if not e.name.startswith(".") and not e.name.startswith(TMP_PREFIX) and e.is_file(follow_symlinks=False)
            ]

    def signature(self) -> tuple:
        """A cheap fingerprint of the folder: changes when any file is added, removed or edited."""
        return tuple(
            sorted((e.name, (s := e.stat(follow_symlinks=False)).st_size, s.st_mtime_ns) for e in self._entries())
        )

    def scan(self) -> list[FileInfo]:
        """Every shared file with its sha256 (from the cache when size and mtime match)."""
        conn = self.db.connect()
        cached = {r["name"]: r for r in conn.execute("SELECT * FROM file_hashes")}
        files, fresh = [], []
        for entry in self._entries():
            try:
                st = entry.stat(follow_symlinks=False)
                row = cached.get(entry.name)
                if _matches(row, st):
                    sha = row["sha256"]
                else:
                    sha = sha256_file(entry.path)
                    fresh.append((entry.name, st.st_size, st.st_mtime_ns, sha))
            except FileNotFoundError:  # removed while we looked
                continue
            files.append(FileInfo(entry.name, st.st_size, st.st_mtime_ns / 1e9, sha))
        gone = set(cached) - {f.name for f in files}
        if fresh or gone:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", fresh)
                conn.executemany("DELETE FROM file_hashes WHERE name = ?", [(n,) for n in gone])
        return sorted(files, key=lambda f: f.name)

    def get(self, name: str) -> FileInfo | None:
        """The named file's info (hashing only that file if needed), or None when it is not shared."""
        try:
            st = (self.folder / name).stat(follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if name.startswith(".") or not stat.S_ISREG(st.st_mode):
            return None
        return self.lookup(name, st)

    def lookup(self, name: str, st: os.stat_result) -> FileInfo:
        """Info of one shared file whose stat is st; hashes it only if the cache is stale.

        One row, not a folder scan: what every transfer request needs.
        """
        conn = self.db.connect()
        row = conn.execute("SELECT size, mtime_ns, sha256 FROM file_hashes WHERE name = ?", (name,)).fetchone()
        if _matches(row, st):
            return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, row["sha256"])
        sha = sha256_file(self.folder / name)
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (name, st.st_size, st.st_mtime_ns, sha)
            )
        return FileInfo(name, st.st_size, st.st_mtime_ns / 1e9, sha)

    def remember(self, name: str, sha256: str) -> None:
        """Cache the hash of a file just written, so the next scan need not re-read it."""
        st = (self.folder / name).stat()
        with self.db.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (name, st.st_size, st.st_mtime_ns, sha256)
            )


def _matches(row, st: os.stat_result) -> bool:
    """True when a cached hash row still describes the file (same size and mtime)."""
    return row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns
