"""A full disk and a rotten copy, against real networks (the launcher and supervisord, or nodes as processes).

Replays two findings: a member uploaded until the disk was full, and then the Maestro
crash-looped on "database or disk is full" and every peer's REST workers died of SIGBUS, for as
long as the disk stayed full; and a bit flipped with its mtime put back stayed advertised with
the old digest for ever (after POST /refresh and a restart too).
"""

from __future__ import annotations

import glob
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from common.config import Settings, run_dir_of
from common.http import new_session
from common.security import bearer, peer_token, read_secret
from control import topology
from control.render import layout_for
from control.supervisor import Supervisor
from tests.launcher_support import launcher, ring_topology
from tests.support import flip, sha, small_disk, wait_until

MiB = 1024 * 1024
RESERVE = 2 * MiB
FULL_DISK_SETTINGS = {
    "heartbeat_interval": 0.5,
    "request_timeout": 1.0,
    "rest_workers": 2,
    "disk_reserve_bytes": RESERVE,
}


def client(maestro: str, *args: str, folder: Path) -> subprocess.CompletedProcess:
    """The client CLI as a user runs it from folder (never the project's root: a demo's secret may lie there)."""
    return subprocess.run(
        [sys.executable, "-m", "peer_app.client", "--maestro", maestro, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def worker_pids(run_dir: Path, node: str) -> set[str]:
    """Every REST worker a node has started since its last start (each leaves its metrics files)."""
    return {Path(f).stem.rpartition("_")[2] for f in glob.glob(str(run_dir / "metrics" / node / "*.db"))}


@pytest.fixture
def disk(tmp_path):
    yield from small_disk(tmp_path / "disk", "24m")


def test_a_full_disk_degrades_to_clear_errors_the_network_keeps_answering_and_writes_come_back_at_once(disk, tmp_path):
    path = ring_topology(disk.path / "net", peers=3, settings=FULL_DISK_SETTINGS)
    launcher("up", str(path), "--timeout", "40")
    try:
        topo = topology.load(path)
        supervisor = Supervisor(layout_for(topo))
        run = run_dir_of(path)
        urls = {"maestro": topo.maestro.url, **{p.name: p.rest_url for p in topo.peers}}
        peer_pids = {p.name: p.pid for p in supervisor.processes() if p.node != "maestro"}
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(4 * MiB))

        # a member uploads until the peer refuses: the reserve, named, before a byte is stored
        for i in range(10):
            done = client(
                topo.maestro.url, "upload", str(blob), "--to", "peer1", "--name", f"fill{i}.bin", folder=path.parent
            )
            if done.returncode != 0:
                break
        assert i >= 1 and done.returncode == 1, done.stderr
        assert "settings.disk_reserve_bytes" in done.stderr and "Traceback" not in done.stderr
        assert disk.free_bytes() >= RESERVE

        disk.fill()  # and something else takes the rest, to the last block
        session = new_session()
        deadline = time.monotonic() + 3.0  # several beats and clock ticks on a full disk
        while time.monotonic() < deadline:
            for node, url in urls.items():
                for route in ("/health", "/peers", "/locate?file=archivo1.txt", "/metrics"):
                    assert session.get(url + route, timeout=5).status_code == 200, (node, route)
        own = bearer(peer_token(read_secret(topo.security.secret_file), "peer1"))  # only peer1 writes its entry
        refused = session.post(topo.maestro.url + "/heartbeat", json={"name": "peer1"}, headers=own, timeout=5)
        assert refused.status_code == 507 and refused.json()["error"] == "insufficient_storage"
        done = client(topo.maestro.url, "upload", str(blob), "--to", "peer2", "--name", "late.bin", folder=path.parent)
        assert done.returncode == 1 and "disk" in done.stderr and "Traceback" not in done.stderr
        # a download into the full disk names it (it said "no holder answered", exit 4, with thread tracebacks)
        got = disk.path / "got.txt"
        done = client(topo.maestro.url, "download", "archivo1.txt", "--out", str(got), folder=path.parent)
        assert done.returncode == 1 and "no space left on device" in done.stderr, done.stderr
        assert f"writing {disk.path}/" in done.stderr, done.stderr  # the partial file beside got.txt
        assert "Traceback" not in done.stderr and "no holder" not in done.stderr and not got.exists()

        # a Maestro restarted on the full disk (a clean stop also removes SQLite's index file) answers reads
        launcher("restart", "maestro", "-t", str(path))
        assert session.get(topo.maestro.url + "/locate?file=archivo2.txt", timeout=5).status_code == 200

        # no crash anywhere: the same peer processes, each REST server still on its first workers
        assert {p.name: p.pid for p in supervisor.processes() if p.node != "maestro"} == peer_pids
        for peer in ("peer1", "peer2", "peer3"):
            assert len(worker_pids(run, peer)) == FULL_DISK_SETTINGS["rest_workers"], peer

        # space freed: writes work again at once
        disk.free()
        for f in (disk.path / "net" / "data" / "peer1").glob("fill*.bin"):
            f.unlink()
        freed = time.monotonic()
        wait_until(
            lambda: (
                client(
                    topo.maestro.url, "upload", str(blob), "--to", "peer2", "--name", "after.bin", folder=path.parent
                ).returncode
                == 0
            ),
            10,
            what="an upload after space was freed",
        )
        wait_until(lambda: session.post(topo.maestro.url + "/heartbeat", json={"name": "peer1"}, headers=own).ok, 5)
        recovered = time.monotonic() - freed
        assert launcher("status", "-t", str(path), check=False).returncode == 0
        logs = "".join(p.read_text(errors="replace") for p in (run / "logs").glob("*.log"))
        assert "SIGBUS" not in logs and "Traceback" not in logs
        print(f"\nfull disk: writes back {recovered:.2f}s after space was freed")
    finally:
        launcher("down", str(path), check=False)


def advertised(maestro: str, name: str) -> dict[str, str]:
    """Who the Maestro says holds name, with the sha256 each advertises."""
    resp = requests.get(maestro + "/locate", params={"file": name}, timeout=5)
    return {p["name"]: p["sha256"] for p in resp.json().get("peers", [])}


def test_a_bit_flip_that_keeps_size_mtime_and_inode_is_no_longer_advertised(network, tmp_path):
    data = os.urandom(256 * 1024)
    nodes = network(
        ["peer1", "peer2"],
        files={"peer1": {"f.bin": data}, "peer2": {"f.bin": data}},
        settings=Settings(heartbeat_interval=0.5, request_timeout=1.0, scrub_rate=0),  # the ctime alone tells
    )
    maestro = nodes["maestro"].url

    def advertised_now() -> dict[str, str]:
        return advertised(maestro, "f.bin")

    wait_until(lambda: advertised_now() == {"peer1": sha(data), "peer2": sha(data)}, 10, what="both holders")
    flip(tmp_path / "data" / "peer1" / "f.bin", 1000)
    # the holder notices at its next look (the ctime moved) and registers again without it
    wait_until(lambda: advertised_now() == {"peer2": sha(data)}, 5, what="peer1 to stop advertising f.bin")
    assert requests.post(nodes["peer1"].url + "/refresh", timeout=10).status_code == 200
    nodes["peer1"].stop()
    nodes["peer1"].start().wait_healthy()
    deadline = time.monotonic() + 2.0  # several beats after the restart
    while time.monotonic() < deadline:
        assert advertised_now() == {"peer2": sha(data)}
    check = requests.post(nodes["peer1"].url + "/recheck", json={"file": "f.bin"}, timeout=10).json()
    assert check["shared"] is False and check["sha256"] != sha(data)
    out = tmp_path / "got.bin"
    done = client(maestro, "download", "f.bin", "--out", str(out), folder=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data


def test_the_scrub_catches_bytes_that_changed_with_no_trace_and_the_holder_stops_advertising_them(network, tmp_path):
    data = os.urandom(1024 * 1024)
    nodes = network(
        ["peer1"], files={"peer1": {"f.bin": data}}, settings=Settings(heartbeat_interval=0.5, scrub_rate=4 * MiB)
    )
    maestro = nodes["maestro"].url
    wait_until(lambda: advertised(maestro, "f.bin") == {"peer1": sha(data)}, 10, what="peer1 registered")
    path = tmp_path / "data" / "peer1" / "f.bin"
    grpc = next(p for p in nodes["peer1"].processes if "peer_app.grpc_server" in p.args)
    grpc.signal_group(signal.SIGSTOP)  # it must not look while the change is made to leave no trace
    try:
        flip(path, 4321)
        # what a failing disk does: the status the index keyed its cache on shows nothing
        with sqlite3.connect(nodes["peer1"].config.db_path) as db:
            db.execute("UPDATE file_hashes SET ctime_ns = ? WHERE name = 'f.bin'", (path.stat().st_ctime_ns,))
    finally:
        grpc.signal_group(signal.SIGCONT)
    wait_until(lambda: advertised(maestro, "f.bin") == {}, 10, what="the scrub to find the change")
    log = grpc.tail(50)
    assert "withheld" in log and "Traceback" not in log
