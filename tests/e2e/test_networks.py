"""Several networks at once, and a network whose node cannot come up: real processes, free ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from control import health, topology
from control.render import layout_for
from control.supervisor import Supervisor
from tests.launcher_support import ROOT, launcher, pid_alive, ring_topology
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SETTINGS = {"heartbeat_interval": 0.5, "rest_workers": 1}


def pids_of(path) -> list[int]:
    sup = Supervisor(layout_for(topology.load(path)))
    if not sup.is_running():
        return []
    return [p.pid for p in sup.processes() if p.pid > 0] + [sup.pid()]


def test_two_networks_run_at_once_without_touching_each_other(tmp_path):
    a = ring_topology(tmp_path / "a", peers=3, settings=SETTINGS)
    b = ring_topology(tmp_path / "b", peers=3, settings=SETTINGS)
    ta, tb = topology.load(a), topology.load(b)
    assert layout_for(ta).socket != layout_for(tb).socket
    all_pids: list[int] = []
    try:
        ups = [
            subprocess.Popen(
                [sys.executable, str(ROOT / "launcher.py"), "up", str(p)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in (a, b)
        ]
        for up in ups:  # both at once: nothing shared between them
            _, err = up.communicate(timeout=120)
            assert up.returncode == 0, err
        all_pids = pids_of(a) + pids_of(b)
        for t in (ta, tb):
            registry = health.maestro_peers(t.maestro.url)
            assert registry is not None, "the Maestro did not answer /peers"
            assert {n: e["rest_url"] for n, e in registry.items()} == {p.name: p.rest_url for p in t.peers}
            assert all(h.ready for h in health.probe(t).values())

        launcher("down", str(a))
        assert not any(pid_alive(p) for p in pids_of(a))
        assert not topology.ports_in_use(ta)
        assert all(h.ready for h in health.probe(tb).values()), "b must not notice a's down"
        assert "RUNNING" in launcher("status", str(b)).stdout
    finally:
        launcher("down", str(a), check=False)
        launcher("down", str(b), check=False)
    assert not [p for p in all_pids if pid_alive(p)]


def test_up_names_the_node_that_did_not_come_up_with_its_log_tail_and_down_cleans_up(tmp_path):
    path = ring_topology(tmp_path, peers=3, settings=SETTINGS)
    # A folder where peer3's SQLite file should be: both its programs crash at start, every time.
    (path.parent / ".run" / path.stem / "peer3.sqlite3").mkdir(parents=True)
    try:
        result = launcher("up", str(path), "--timeout", "30", check=False)
        assert result.returncode == 1, result.stderr
        lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("starting supervisord")]
        assert re.fullmatch(r"1 node\(s\) did not come up after [0-9.]+s \(timeout 30s\): peer3", lines[0]), lines
        assert lines[1].startswith("peer3: not up after `up` (peer3-grpc:"), lines
        assert any("peer3-grpc.log" in line for line in lines)
        assert any("peer3-rest.log" in line for line in lines)

        def status_names_the_crash_loop() -> str | None:
            status = launcher("status", str(path), check=False)
            return status.stderr if status.returncode == 1 and "peer3: crash loop (" in status.stderr else None

        # supervisord gives up (FATAL), p2p-restarter tries again later: status shows the loop, logs and all
        report = wait_until(status_names_the_crash_loop, 20, interval=0.5, what="status naming the crash loop")
        assert "peer3-grpc.log" in report and "peer3-rest.log" in report
        pids = pids_of(path)
    finally:
        launcher("down", str(path))
    assert not [p for p in pids if pid_alive(p)]


def test_up_refuses_a_shared_dir_that_is_a_file(tmp_path):
    path = ring_topology(tmp_path, peers=3, settings=SETTINGS)
    shared = path.parent / yaml.safe_load(path.read_text())["peers"][2]["shared_dir"]
    for child in shared.iterdir():
        child.unlink()
    shared.rmdir()
    shared.write_text("not a folder")
    result = launcher("up", str(path), check=False)
    assert result.returncode == 2
    assert f"peers[2].shared_dir: {shared} exists and is not a folder" in result.stderr
    assert not (path.parent / ".run" / path.stem / "supervisord.pid").exists()


def test_down_stops_what_a_killed_supervisord_left_behind(tmp_path):
    path = ring_topology(tmp_path, peers=3, settings=SETTINGS)
    launcher("up", str(path))
    t = topology.load(path)
    sup = Supervisor(layout_for(t))
    children = [p.pid for p in sup.processes() if p.node in t.node_names]  # the nodes (not the event listener)
    os.kill(sup.pid(), signal.SIGKILL)
    wait_until(lambda: not sup.is_running(), 5, what="supervisord to die")
    assert all(pid_alive(p) for p in children)  # orphans, still serving
    result = launcher("down", str(path))
    assert "supervisord is gone; stopping" in result.stderr
    assert not [p for p in children if pid_alive(p)]
    assert not topology.ports_in_use(t)


def test_down_names_ports_held_by_others_when_the_network_is_not_running(tmp_path):
    path = ring_topology(tmp_path, peers=3)
    port = yaml.safe_load(path.read_text())["maestro"]["port"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        result = launcher("down", str(path), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"the network is not running, yet other processes hold maestro.port (127.0.0.1:{port})"
    )
