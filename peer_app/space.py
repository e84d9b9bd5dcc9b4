"""Each member's quota of a peer's shared folder (the free-space reserve is AtomicFile's, in storage.py).

A member's usage on a peer is the size of the files its uploads put there that are still the
files it put: each upload records (name, uploader, inode) just before its file takes the name,
and a record counts while the name holds that inode. So an overwrite hands the file to its new
uploader, and a file its owner replaced or removed by hand counts for nobody. Uploads in flight
count too (one process, the peer's gRPC server, runs them all), so parallel uploads cannot pass
a quota together. The operator (the trusted address or the operator's token) has no quota:
only the disk's reserve limits it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from common.db import Database
from common.errors import QuotaExceeded
from common.security import OPERATOR
from peer_app.storage import SharedFolder

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    name TEXT PRIMARY KEY,
    principal TEXT NOT NULL,   -- who uploaded the file now under this name
    ino INTEGER NOT NULL       -- the file it uploaded (the name counts for it while it holds this inode)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_by_principal ON uploads(principal);
"""


class Quotas:
    """Who holds how many bytes of one shared folder, and whether an upload still fits its uploader's quota."""

    def __init__(self, folder: SharedFolder, db: Database, quota: int) -> None:
        self.folder = folder
        self.db = db
        self.quota = quota
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        if not db.connect().read_only:
            with db.unless_full("the uploads' table"):
                db.connect().executescript(SCHEMA)

    def limited(self, principal: str | None) -> bool:
        """Whether principal's uploads count against a quota (no one's do with quota 0; the operator's never)."""
        return self.quota > 0 and principal is not None and principal != OPERATOR

    def usage(self, principal: str, *, besides: str = "") -> int:
        """Bytes of the shared files principal's uploads put here (the file named besides left out)."""
        total = 0
        rows = self.db.connect().execute("SELECT name, ino FROM uploads WHERE principal = ?", (principal,))
        for row in rows.fetchall():
            if row["name"] == besides:
                continue
            st = self.folder.stat(row["name"])
            if st is not None and st.st_ino == row["ino"]:
                total += st.st_size
        return total

    @contextmanager
    def claim(self, principal: str | None, name: str, size: int) -> Iterator[None]:
        """Hold size bytes of principal's quota for an upload of name; QuotaExceeded if they do not fit."""
        if principal is None or not self.limited(principal):
            yield
            return
        with self._lock:
            # an overwrite of name frees what name holds now, if it is principal's
            used = self.usage(principal, besides=name) + self._pending.get(principal, 0)
            if used + size > self.quota:
                raise QuotaExceeded(
                    f"{principal}'s files on this peer would hold {used + size} bytes, over its quota of "
                    f"{self.quota} (settings.member_quota_bytes): {name!r} was not stored"
                )
            self._pending[principal] = self._pending.get(principal, 0) + size
        try:
            yield
        finally:
            with self._lock:
                left = self._pending.pop(principal) - size
                if left:
                    self._pending[principal] = left

    def record(self, name: str, principal: str | None, ino: int) -> None:
        """Note that principal's upload is the file (inode ino) about to take name (InsufficientStorage: disk full)."""
        with self.db.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO uploads (name, principal, ino) VALUES (?, ?, ?)",
                (name, principal or OPERATOR, ino),
            )
