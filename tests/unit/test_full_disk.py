"""A full disk is a resource running out, not a crash: in-process, on a real (small, mounted) disk.

The tests that fill a disk mount a tmpfs of a few MiB (tests.support.SmallDisk) and skip where
that is not allowed. What they replay: a member filled the disk; the Maestro then crash-looped on
"database or disk is full" and every peer's REST workers died of SIGBUS (issue: a full disk
takes the network down).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client.transfer import TransferClient
from common.config import Security, Settings
from common.db import Database
from common.errors import InsufficientStorage, QuotaExceeded
from common.gunicorn_conf import PREALLOCATED, metrics_file, preallocate, release
from common.metrics import MAX_SERIES
from common.security import ensure_secret, operator_token, peer_token, read_secret
from maestro_app.directory import Directory, FileEntry
from tests.support import ROOT, Clock, leftovers, sha, wait_until

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB);"
SHA = "a" * 64


def registration(name: str = "peer1") -> dict:
    return {"name": name, "rest_url": "http://127.0.0.1:1", "grpc_address": "127.0.0.1:2",
            "files": [{"name": "a.txt", "size": 1, "mtime": 1.0, "sha256": SHA}]}  # fmt: skip


# --- SQLite ------------------------------------------------------------------------------------


def test_a_write_on_a_full_disk_is_insufficient_storage_and_reads_go_on(small_disk):
    db = Database(small_disk.path / "x.sqlite3", SCHEMA)
    db.connect().execute("INSERT INTO t VALUES ('a', ?)", (b"x" * 1000,))
    small_disk.fill()
    with pytest.raises(InsufficientStorage, match="disk is full"):
        for i in range(100):  # the WAL may have room for a few pages
            db.connect().execute("INSERT INTO t VALUES (?, ?)", (f"k{i}", bytes(8192)))
    assert db.connect().execute("SELECT v FROM t WHERE k = 'a'").fetchone()["v"] == b"x" * 1000
    small_disk.free()
    db.connect().execute("INSERT INTO t VALUES ('b', x'00')")


def test_a_database_that_cannot_be_opened_on_a_full_disk_is_read_as_it_is_until_space_is_freed(small_disk):
    """A clean stop removes the WAL index (-shm); on a full disk the next open cannot make it again."""
    path = small_disk.path / "x.sqlite3"
    first = Database(path, SCHEMA)
    first.connect().execute("INSERT INTO t VALUES ('a', x'01')")
    first.connect().close()
    assert not Path(f"{path}-shm").exists()
    small_disk.fill()
    db = Database(path, SCHEMA)  # what a restarted worker does: no crash
    assert db.connect().read_only
    assert db.connect().execute("SELECT count(*) FROM t").fetchone()[0] == 1
    with pytest.raises(InsufficientStorage):
        db.connect().execute("INSERT INTO t VALUES ('b', x'02')")
    with pytest.raises(InsufficientStorage), db.connect() as conn:
        conn.execute("INSERT INTO t VALUES ('b', x'02')")
    small_disk.free()
    wait_until(lambda: not db.connect().read_only, 5, what="a normal connection once space is freed")
    db.connect().execute("INSERT INTO t VALUES ('b', x'02')")


# --- the Maestro -----------------------------------------------------------------------------


def test_the_maestro_on_a_full_disk_starts_answers_reads_and_refuses_writes_with_507(make_config, small_disk):
    from maestro_app import create_app

    config = make_config("maestro", run_dir=str(small_disk.path / "run"))
    client = create_app(config).test_client()
    assert client.post("/register", json=registration()).status_code == 200
    small_disk.fill()
    for _ in range(3):  # a new worker on the full disk, twice: no crash at start
        client = create_app(config).test_client()
    for path in ("/health", "/", "/peers", "/directory", "/locate?file=a.txt", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/locate?file=a.txt").get_json()["peers"][0]["name"] == "peer1"
    for path, body in (("/register", registration("peer2")), ("/heartbeat", {"name": "peer1"})):
        resp = client.post(path, json=body)
        assert resp.status_code == 507, path
        assert resp.get_json()["error"] == "insufficient_storage"
        assert "disk is full" in resp.get_json()["detail"]
    small_disk.free()
    wait_until(lambda: client.post("/register", json=registration("peer2")).status_code == 200, 5, what="writes")


def test_liveness_stands_still_while_the_maestro_cannot_record_beats(small_disk):
    """Beats it could not record are not held against the peers; they count again once writes work."""
    clock = Clock()
    directory = Directory(str(small_disk.path / "m.sqlite3"), default_interval=1.0, expire_after_beats=3, clock=clock)
    directory.register("peer1", "http://h:1", "h:2", [FileEntry("a.txt", 1, 1.0, SHA)])
    small_disk.fill()
    clock.now += 1
    directory.tick()  # cannot be written: the clock stops here
    clock.now += 60
    assert [p["name"] for p in directory.locate("a.txt")] == ["peer1"]
    with pytest.raises(InsufficientStorage):
        directory.heartbeat("peer1")
    small_disk.free()
    clock.now += 1
    directory.tick()  # writes again: the peers alive when it stopped get a fresh window
    assert [p["name"] for p in directory.locate("a.txt")] == ["peer1"]
    clock.now += 3.5  # and then expire as usual if they do not beat
    assert directory.locate("a.txt") == []


# --- a peer ------------------------------------------------------------------------------------


def on_disk(config, disk, **settings):
    shared = disk.path / "shared"
    shared.mkdir(exist_ok=True)
    for f in Path(config.shared_dir).iterdir():
        (shared / f.name).write_bytes(f.read_bytes())
    return dataclasses.replace(
        config,
        shared_dir=str(shared),
        run_dir=str(disk.path / "run"),
        settings=dataclasses.replace(config.settings, **settings),
    )


def test_a_peer_on_a_full_disk_starts_and_answers_reads(peer_config, small_disk):
    from peer_app import create_app

    config = on_disk(peer_config, small_disk)
    create_app(config).test_client().get("/files")
    (Path(config.shared_dir) / "new.txt").write_text("new\n")  # not hashed yet: its cache row cannot be written
    small_disk.fill()
    client = create_app(config).test_client()
    assert {f["name"] for f in client.get("/files").get_json()["files"]} == {"archivo1.txt", "notes.md", "new.txt"}
    assert client.get("/search?query=arch&ttl=1").status_code == 200
    assert client.get("/locate?file=new.txt").get_json()["peers"][0]["name"] == "peer1"
    assert client.post("/recheck", json={"file": "notes.md"}).get_json()["changed"] is False
    for path in ("/", "/info", "/peers", "/health", "/metrics"):
        assert client.get(path).status_code == 200, path


def upload(address: str, path: Path, name: str, token: str | None = None, overwrite: bool = False):
    from common.credentials import Credentials

    with TransferClient(address, retry_for=0, credentials=Credentials(token)) as client:
        return client.upload(path, name, overwrite=overwrite)


def test_an_upload_that_would_eat_into_the_reserve_is_refused_before_a_byte_is_stored(
    peer_config, small_disk, serve, tmp_path
):
    config = on_disk(peer_config, small_disk)  # a disk of its own: nobody else's writes move its free space
    address, shared = serve(config, disk_reserve_bytes=small_disk.free_bytes() - 1000)
    data = tmp_path / "f.bin"
    data.write_bytes(os.urandom(4096))
    with pytest.raises(InsufficientStorage, match="settings.disk_reserve_bytes"):
        upload(address, data, "f.bin")
    assert not (shared / "f.bin").exists() and leftovers(shared) == []


def test_an_upload_larger_than_the_disk_is_refused_at_once_and_leaves_nothing(peer_config, small_disk, serve):
    address, shared = serve(on_disk(peer_config, small_disk), disk_reserve_bytes=0)
    big = Path(peer_config.run_dir).parent / "big.bin"
    big.write_bytes(bytes(16 * 1024 * 1024))  # twice the disk
    with pytest.raises(InsufficientStorage, match="disk is full"):
        upload(address, big, "big.bin")
    assert not (shared / "big.bin").exists() and leftovers(shared) == []
    assert small_disk.free_bytes() > 4 * 1024 * 1024  # the claimed blocks went back


def test_two_uploads_at_once_cannot_both_count_on_the_same_space(peer_config, small_disk, serve, stub_for, tmp_path):
    """The first claims its blocks when it starts: the second sees them gone, not the free space before."""
    import threading

    from common import transfer_pb2

    config = on_disk(peer_config, small_disk)
    size = 2 * 1024 * 1024
    address, shared = serve(config, disk_reserve_bytes=small_disk.free_bytes() - size - size // 2)  # room for one
    data = os.urandom(size)
    go_on = threading.Event()

    def held():  # the first upload sends one chunk, then waits
        yield transfer_pb2.FileChunk(filename="a.bin", size=size, sha256=sha(data), data=data[:65536])
        go_on.wait(30)
        yield transfer_pb2.FileChunk(data=data[65536:])

    first = stub_for(address, own_connection=True).Upload.future(held(), timeout=60)
    try:
        wait_until(lambda: leftovers(shared) != [], 10, what="the first upload under way")
        second = tmp_path / "b.bin"
        second.write_bytes(data)
        with pytest.raises(InsufficientStorage, match="settings.disk_reserve_bytes"):
            upload(address, second, "b.bin")
    finally:
        go_on.set()
    assert first.result().ok
    assert small_disk.free_bytes() >= size // 2 and not (shared / "b.bin").exists()


def test_a_member_is_held_to_its_quota_the_operator_is_not(peer_config, serve, tmp_path):
    secret_file = tmp_path / ".p2p-secret"
    ensure_secret(secret_file)
    secret = read_secret(secret_file)
    security = Security(secret_file=str(secret_file), trusted_networks=())  # loopback is no operator here
    members_only = dataclasses.replace(peer_config, security=security)
    address, shared = serve(members_only, member_quota_bytes=1000)
    files = {n: tmp_path / f"{n}.bin" for n in (600, 900, 5000)}
    for n, path in files.items():
        path.write_bytes(os.urandom(n))
    own = peer_token(secret, peer_config.name)  # only the operator and the peer's own credential upload into it
    assert upload(address, files[600], "a.bin", own).ok
    with pytest.raises(QuotaExceeded, match=f"{peer_config.name}'s files on this peer would hold 1200 bytes"):
        upload(address, files[600], "b.bin", own)
    assert upload(address, files[900], "a.bin", own, overwrite=True).ok  # its own file's bytes are freed
    (shared / "a.bin").unlink()  # removed by hand: counts for nobody
    assert upload(address, files[900], "c.bin", own).ok
    assert upload(address, files[5000], "d.bin", operator_token(secret)).ok
    assert leftovers(shared) == []


# --- metrics files (the SIGBUS) ------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys, types
    from common.gunicorn_conf import post_fork, preallocate, share_libraries
    if sys.argv[1] == "preallocate":
        preallocate(os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid())
    with open(sys.argv[2], "ab", buffering=0) as fh:  # the disk fills up to the last block
        try:
            while True:
                fh.write(bytes(4096))
        except OSError:
            pass
    if sys.argv[1] == "post_fork":  # what gunicorn's master does, then a new worker, on the full disk
        share_libraries()
        log = types.SimpleNamespace(warning=lambda *args: print("warning:", args[0] % args[1:]))
        post_fork(types.SimpleNamespace(log=log), types.SimpleNamespace(ppid=os.getppid()))
    from common.metrics import Metrics
    m = Metrics()
    for i in range(int(sys.argv[3])):
        m.observe_request(f"/route/{i}", ("GET", "POST", "X%d" % i)[i % 3], 200 + i % 7, 0.01)
    print("counted")
    """
)


def run_worker(disk, mode: str, series: int) -> subprocess.CompletedProcess:
    folder = disk.path / "metrics"
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(disk.path / "filler"), str(series)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_whose_metrics_files_are_preallocated_counts_on_a_full_disk(small_disk):
    done = run_worker(small_disk, "preallocate", MAX_SERIES + 40)
    assert done.returncode == 0 and "counted" in done.stdout, done.stderr
    for kind, size in PREALLOCATED.items():  # every series fitted: no file grew beyond its blocks
        files = list((small_disk.path / "metrics").glob(f"{kind}_*.db"))
        assert [f.stat().st_size for f in files] == [size]


def test_a_worker_that_cannot_preallocate_on_a_full_disk_counts_in_memory(small_disk):
    """The master imported prometheus_client in multiprocess mode; the worker still starts and counts."""
    done = run_worker(small_disk, "post_fork", 5)
    assert done.returncode == 0 and "counted" in done.stdout, done.stderr
    assert "counts its metrics in memory" in done.stdout
    assert list((small_disk.path / "metrics").glob("*.db")) == []


def test_without_preallocation_a_full_disk_kills_the_worker_with_sigbus(small_disk):
    """What the preallocation prevents (prometheus_client maps sparse files): the test above can fail."""
    done = run_worker(small_disk, "plain", 3)
    assert done.returncode == -7  # SIGBUS


def test_preallocation_on_a_full_disk_fails_cleanly_and_a_dead_workers_files_shrink(small_disk):
    folder = small_disk.path / "metrics"
    folder.mkdir()
    preallocate(str(folder), 4242)
    assert all(os.stat(metrics_file(str(folder), k, 4242)).st_size == n for k, n in PREALLOCATED.items())
    release(str(folder), 4242)  # nothing counted: cut back to one page
    assert all(os.stat(metrics_file(str(folder), k, 4242)).st_size <= 4096 for k in PREALLOCATED)
    small_disk.fill()
    with pytest.raises(OSError):
        preallocate(str(folder), 4343)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{k}_4242.db" for k in PREALLOCATED)


def test_request_series_are_bounded_whatever_methods_a_caller_invents():
    from common.metrics import Metrics

    metrics = Metrics()
    for i in range(5 * MAX_SERIES):
        metrics.observe_request("/locate", f"M{i}", 404, 0.001)
        metrics.observe_request(f"/r{i}", "GET", 200, 0.001)
    labels = {s.labels["method"] for f in metrics.registry.collect() for s in f.samples if "method" in s.labels}
    assert labels <= {"GET", "OTHER"}
    series = {
        (s.labels["endpoint"], s.labels["method"], s.labels["status"])
        for f in metrics.registry.collect()
        if f.name == "p2p_http_requests"
        for s in f.samples
    }
    assert len(series) == MAX_SERIES + 1  # and the overflow series


def test_settings_name_the_reserve_and_the_quota():
    assert Settings().disk_reserve_bytes > 0 and Settings().member_quota_bytes > Settings().max_upload_bytes


def test_a_small_disk_left_mounted_by_a_killed_run_is_unmounted_by_the_next(tmp_path, small_disk):
    from tests.support import sweep_small_disks

    code = "import os, sys; from tests.support import SmallDisk; SmallDisk(sys.argv[1]).mount(); os._exit(9)"
    left = tmp_path / "left"
    subprocess.run([sys.executable, "-c", code, str(left)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    mounted = lambda: {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}  # noqa: E731
    assert str(left) in mounted()
    assert sweep_small_disks() == [str(left)]
    assert str(left) not in mounted() and str(small_disk.path) in mounted()  # a live run's disk stays
