"""Holders hash their files again: a rotten copy is noticed and never advertised with a digest it no longer has.

Replays: a bit flipped with its mtime put back (size, mtime and inode kept) was advertised with
the old digest for ever, after POST /refresh and a restart too. And bytes that change with no
trace in the file's status at all (a failing disk) are caught by the scrub and POST /recheck.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from common.config import Security, Settings
from common.errors import NotFound
from common.security import ensure_secret
from peer_app import views
from peer_app.index import Check, SharedIndex
from peer_app.scrub import MIN_FILE_COST, Pace, Scrub
from peer_app.state import open_db
from tests.support import Clock, flip, sha

MiB = 1024 * 1024


def hide(index: SharedIndex, path: Path) -> None:
    """Make the cache believe the file's new status is the one it hashed: bytes that changed without a trace."""
    ctime = path.stat().st_ctime_ns
    index.db.connect().execute("UPDATE file_hashes SET ctime_ns = ? WHERE name = ?", (ctime, path.name))


@pytest.fixture
def folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.bin").write_bytes(b"a" * 5000)
    (shared / "b.bin").write_bytes(b"b" * 3000)
    return shared, SharedIndex(shared, open_db(str(tmp_path / "p.sqlite3")))


def names(index: SharedIndex) -> dict[str, str]:
    return {f.name: f.sha256 for f in index.scan()}


def test_a_bit_flip_with_its_mtime_put_back_is_noticed_and_the_file_withheld(folder, caplog):
    shared, index = folder
    assert names(index)["a.bin"] == sha(b"a" * 5000)
    flip(shared / "a.bin")
    assert names(index) == {"b.bin": sha(b"b" * 3000)}  # not listed (not registered) any more
    assert "withheld" in caplog.text
    assert index.get("a.bin") is None
    fh, st, name = index.folder.open("a.bin")
    with fh, pytest.raises(NotFound, match="withheld"):
        index.lookup(name, st, fh)  # not served either
    assert names(SharedIndex(shared, index.db)) == {"b.bin": sha(b"b" * 3000)}  # a restart keeps it so


def test_a_withheld_file_its_owner_touches_is_shared_again_as_it_is(folder):
    shared, index = folder
    index.scan()
    flip(shared / "a.bin")
    index.scan()
    os.utime(shared / "a.bin")  # a new mtime: the owner says this is the file now
    expected = bytearray(b"a" * 5000)
    expected[0] ^= 1
    assert names(index)["a.bin"] == sha(bytes(expected))


def test_an_edit_that_changes_the_mtime_is_a_new_version_not_a_rotten_copy(folder):
    shared, index = folder
    index.scan()
    (shared / "a.bin").write_bytes(b"c" * 5000)
    assert names(index)["a.bin"] == sha(b"c" * 5000)


def test_a_file_rewritten_while_it_is_read_is_a_new_version_not_a_damaged_copy(folder):
    """The scrub read the old file's start and the new one's end, and withheld it as a damaged copy."""
    shared, index = folder
    index.scan()
    rewrites: list[int] = []

    def rewrite_once(n: int) -> None:  # the scrub's pace runs between two reads of the file
        if not rewrites:
            rewrites.append(n)
            (shared / "a.bin").write_bytes(b"c" * 7000)

    check = index.verify("a.bin", pace=rewrite_once)
    assert check is not None and (check.shared, check.changed, check.sha256) == (True, True, sha(b"c" * 7000))
    assert names(index)["a.bin"] == sha(b"c" * 7000)


def test_a_file_that_keeps_changing_while_it_is_read_gets_no_verdict(folder):
    shared, index = folder
    index.scan()
    sizes = iter(range(4990, 4000, -10))  # shorter each time: each read of it ends after one block

    def rewrite(n: int) -> None:
        (shared / "a.bin").write_bytes(b"d" * next(sizes))

    check = index.verify("a.bin", pace=rewrite)
    assert check is not None and check.shared  # not withheld
    final = (shared / "a.bin").read_bytes()
    assert names(index)["a.bin"] == sha(final)  # hashed again at the next look, as it is then


def test_verify_catches_bytes_that_changed_with_no_trace_in_the_status(folder):
    shared, index = folder
    index.scan()
    flip(shared / "a.bin", 17)
    hide(index, shared / "a.bin")
    assert names(index)["a.bin"] == sha(b"a" * 5000)  # the cache cannot tell
    check = index.verify("a.bin")
    assert (check.changed, check.shared) == (True, False)
    assert "a.bin" not in names(index)
    assert index.verify("b.bin").changed is False
    assert index.verify("missing.bin") is None


def test_the_scrub_reads_at_its_rate_and_reports_what_changed(folder):
    shared, index = folder
    (shared / "big.bin").write_bytes(os.urandom(3 * MiB))
    index.scan()
    flip(shared / "big.bin", MiB + 3)
    hide(index, shared / "big.bin")
    time = Clock(0.0)  # the scrub's sleeps move it forward
    found: list[Check] = []
    scrub = Scrub(index, MiB, on_change=found.append, clock=time, sleep=time.sleep)
    changed = scrub.run_pass()
    assert [c.file for c in changed] == [c.file for c in found] == ["big.bin"]
    assert "big.bin" not in names(index)
    # each small file costs MIN_FILE_COST, the big one its bytes, at 1 MiB/s; each read waits out the one
    # before it, so the pass has waited for all but its last read (the next pass waits that out)
    assert time.now == pytest.approx((2 * MIN_FILE_COST + 3 * MiB) / MiB - 3)
    assert scrub.bytes_read == 5000 + 3000 + 3 * MiB
    second = scrub.run_pass()  # the withheld file is not read again
    assert second == [] and scrub.bytes_read == 2 * (5000 + 3000) + 3 * MiB


def test_the_scrub_checks_the_longest_unchecked_file_first(folder):
    shared, index = folder
    index.scan()
    index.verify("a.bin")  # checked last
    assert [name for name, _ in index.scrub_order()] == ["b.bin", "a.bin"]


# --- POST /recheck and POST /refresh ------------------------------------------------------------


@pytest.fixture
def maestro_url(maestro_config):
    """A real Maestro (in-process, over HTTP) for peers to register at."""
    from maestro_app import create_app

    server = make_server("127.0.0.1", 0, create_app(maestro_config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def holders(maestro_url: str, name: str) -> list[str]:
    import requests

    resp = requests.get(f"{maestro_url}/locate", params={"file": name}, timeout=5)
    return [p["sha256"] for p in resp.json().get("peers", [])]


def test_recheck_hashes_again_answers_the_contract_and_re_registers_at_once(peer_config, maestro_url, monkeypatch):
    from peer_app import create_app

    config = dataclasses.replace(peer_config, maestro_url=maestro_url)
    client = create_app(config).test_client()
    assert client.post("/refresh").status_code == 200
    path = Path(config.shared_dir) / "archivo1.txt"
    assert holders(maestro_url, "archivo1.txt") == [sha(b"hola\n")]
    first = client.post("/recheck", json={"file": "archivo1.txt"})
    assert first.status_code == 200
    assert first.get_json() == {
        "file": "archivo1.txt", "size": 5, "sha256": sha(b"hola\n"),
        "blake3": first.get_json()["blake3"], "changed": False, "shared": True,
    }  # fmt: skip
    flip(path, 1)
    hide(client.application.extensions["index"], path)
    again = client.post("/recheck", json={"file": "archivo1.txt"}).get_json()
    assert (again["sha256"], again["changed"]) == (sha(b"hola\n"), False)  # within 30 s: the last result
    monkeypatch.setattr(views, "RECHECK_WINDOW", 0.0)
    found = client.post("/recheck", json={"file": "archivo1.txt"}).get_json()
    assert (found["changed"], found["shared"]) == (True, False)
    assert found["sha256"] == sha(b"hnla\n")
    assert holders(maestro_url, "archivo1.txt") == []  # registered again, without it
    assert client.post("/recheck", json={"file": "nothing.txt"}).status_code == 404
    assert client.post("/recheck", json={"file": "../x"}).status_code == 400


def test_recheck_keeps_no_row_for_unshared_names_and_a_crowd_waits_a_bounded_time(peer_config, monkeypatch):
    from peer_app import create_app

    client = create_app(peer_config).test_client()
    index = client.application.extensions["index"]
    for i in range(50):  # names anyone may send: nothing is hashed, nothing is kept
        assert client.post("/recheck", json={"file": f"missing-{i}.txt"}).status_code == 404
    assert index.db.connect().execute("SELECT COUNT(*) FROM rechecks").fetchone()[0] == 0
    monkeypatch.setattr(views, "REHASH_WAIT", 0.1)
    lock = client.application.extensions.setdefault("rehash_lock", threading.Lock())
    with lock:  # a re-hash under way: the next request is told to come back, not parked
        busy = client.post("/recheck", json={"file": "archivo1.txt"})
    assert (busy.status_code, busy.get_json()["error"]) == (503, "busy")
    assert client.post("/recheck", json={"file": "archivo1.txt"}).status_code == 200


def test_refresh_hashes_every_file_again(peer_config, maestro_url, monkeypatch):
    from peer_app import create_app

    monkeypatch.setattr(views, "RECHECK_WINDOW", 0.0)  # a file is hashed for /refresh at most this often
    config = dataclasses.replace(peer_config, maestro_url=maestro_url)
    client = create_app(config).test_client()
    client.post("/refresh")
    path = Path(config.shared_dir) / "notes.md"
    flip(path, 2)
    hide(client.application.extensions["index"], path)
    assert holders(maestro_url, "notes.md")
    answer = client.post("/refresh").get_json()
    assert answer["changed"] == ["notes.md"] and answer["files"] == 1
    assert holders(maestro_url, "notes.md") == []


def test_refresh_hashes_at_the_scrubs_pace(peer_config, maestro_url, monkeypatch):
    from peer_app import create_app

    monkeypatch.setattr(views, "RECHECK_WINDOW", 0.0)
    client = create_app(dataclasses.replace(peer_config, maestro_url=maestro_url)).test_client()
    time = Clock(0.0)  # the pace's sleeps move it forward
    pace = client.application.extensions["rehash_pace"] = Pace(MiB, clock=time, sleep=time.sleep)
    assert client.post("/refresh").status_code == 200
    assert pace.bytes_read == len("hola\n") + len("# notes\n")
    # two small files at 1 MiB/s, each costing MIN_FILE_COST: the second waited for the first
    assert time.now == pytest.approx(MIN_FILE_COST / MiB, abs=0.001)


def test_recheck_is_a_read(make_config, tmp_path):
    """Anyone who may read may ask (a client that caught bad bytes); with `read: members`, members only."""
    from peer_app import create_app

    secret = tmp_path / ".p2p-secret"
    ensure_secret(secret)
    stranger = {"REMOTE_ADDR": "10.208.0.2"}
    for read, status in (("open", 200), ("members", 401)):
        config = make_config("peer", security=Security(secret_file=str(secret), read=read))
        (Path(config.shared_dir) / "f.txt").write_text("x")
        client = create_app(config).test_client()
        assert client.post("/recheck", json={"file": "f.txt"}, environ_base=stranger).status_code == status
        assert client.post("/refresh", environ_base=stranger).status_code == 401  # a write, as before


def test_the_scrub_is_on_by_default_at_a_bounded_rate():
    assert 0 < Settings().scrub_rate <= 64 * MiB
