"""The shared-folder index: the folder is the truth, hashes are cached by size and mtime."""

from __future__ import annotations

import hashlib
import os

from peer_app.index import SharedIndex
from peer_app.state import open_db


def make_index(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    return shared, SharedIndex(shared, open_db(str(tmp_path / "p.sqlite3")))


def test_scan_lists_regular_visible_files_with_their_sha256(tmp_path):
    shared, index = make_index(tmp_path)
    (shared / "a.txt").write_bytes(b"abc")
    (shared / ".p2p-tmp-x-a.txt").write_bytes(b"partial")
    (shared / "sub").mkdir()
    files = index.scan()
    assert [(f.name, f.size, f.sha256) for f in files] == [("a.txt", 3, hashlib.sha256(b"abc").hexdigest())]


def test_hash_is_cached_until_size_or_mtime_change(tmp_path):
    shared, index = make_index(tmp_path)
    (shared / "a.txt").write_bytes(b"abc")
    index.scan()
    index.db.connect().execute("UPDATE file_hashes SET sha256 = 'cached'")
    assert index.scan()[0].sha256 == "cached"  # not re-read
    assert index.get("a.txt").sha256 == "cached"
    (shared / "a.txt").write_bytes(b"abcd")
    assert index.scan()[0].sha256 == hashlib.sha256(b"abcd").hexdigest()


def test_removed_files_leave_the_index_and_signature_changes(tmp_path):
    shared, index = make_index(tmp_path)
    (shared / "a.txt").write_bytes(b"abc")
    before = index.signature()
    index.scan()
    os.unlink(shared / "a.txt")
    assert index.scan() == []
    assert index.signature() != before
    assert index.get("a.txt") is None
