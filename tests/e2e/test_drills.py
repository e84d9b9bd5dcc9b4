"""Failure drills against a real network: supervisord, gunicorn and gRPC on free ports.

One network per module (3 peers, fast heartbeats); each drill leaves it healthy again.
Everything waits by polling with deadlines; teardown runs `down` and checks no pid is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from common.http import new_session
from control import health, topology
from control.processes import RESTARTER
from control.render import layout_for
from control.supervisor import Supervisor
from tests.launcher_support import launcher, pid_alive, ring_topology
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SETTINGS = {"heartbeat_interval": 0.5, "request_timeout": 1.0, "rest_workers": 1}
RECOVERY_SECONDS = 5.0


class Net:
    """A running network seen from outside: its topology, its supervisord, HTTP helpers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.topology = topology.load(path)
        self.supervisor = Supervisor(layout_for(self.topology))
        self.http = new_session()

    def url(self, node: str) -> str:
        return self.topology.maestro.url if node == "maestro" else self.topology.peer(node).rest_url

    def get(self, node: str, path: str, timeout: float = 5.0) -> requests.Response:
        return self.http.get(self.url(node) + path, timeout=timeout)

    def pids(self, node: str | None = None) -> dict[str, int]:
        return {p.name: p.pid for p in self.supervisor.processes() if node in (None, p.node)}

    def states(self, node: str) -> set[str]:
        return {p.state for p in self.supervisor.group(node)}

    def registry(self) -> dict[str, dict]:
        return health.maestro_peers(self.topology.maestro.url) or {}

    def healthy(self, node: str) -> bool:
        return health.probe(self.topology, [node])[node].healthy

    def all_pids(self) -> list[int]:
        return [*self.pids().values(), self.supervisor.pid()]


def bring_down(net: Net) -> None:
    """Run `down` and check that no process of the network and no port is left."""
    pids = [p for p in net.all_pids() if p > 0]
    launcher("down", str(net.path))
    left = [p for p in pids if pid_alive(p)]
    assert not left, f"processes left after down: {left}"
    assert not topology.ports_in_use(net.topology)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = ring_topology(tmp_path_factory.mktemp("drills"), peers=3, settings=SETTINGS)
    launcher("up", str(path), "--timeout", "30")
    network = Net(path)
    try:
        yield network
    finally:
        bring_down(network)


def test_up_brought_every_node_up_healthy_and_registered(net):
    status = health.probe(net.topology, with_files=True)
    assert all(h.ready for h in status.values()), status
    assert {n: h.files for n, h in status.items() if n != "maestro"} == {"peer1": 1, "peer2": 1, "peer3": 1}
    assert net.get("maestro", "/locate?file=archivo1.txt").status_code == 200


def test_plain_supervisorctl_in_the_topology_folder_lists_every_program_running(net):
    exe = Path(sys.executable).parent / "supervisorctl"
    ctl = str(exe) if exe.exists() else shutil.which("supervisorctl")
    assert ctl is not None, "supervisorctl is not installed"
    out = subprocess.run([ctl, "status"], cwd=net.path.parent, check=False, capture_output=True, text=True, timeout=10)
    rows = [line.split() for line in out.stdout.splitlines()]
    assert sorted(r[0] for r in rows) == sorted(
        ["maestro", RESTARTER, *(f"{p}:{p}-{k}" for p in ("peer1", "peer2", "peer3") for k in ("rest", "grpc"))]
    )
    assert all(r[1] == "RUNNING" for r in rows), out.stdout


def test_up_again_is_idempotent_and_restarts_nothing(net):
    before = net.pids()
    result = launcher("up", str(net.path))
    assert "healthy" in result.stdout
    assert net.pids() == before


def test_status_has_one_row_per_node_running_healthy_registered(net):
    lines = launcher("status", str(net.path)).stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["maestro", "peer1", "peer2", "peer3"]
    for name in ("peer1", "peer2", "peer3"):
        _, state, pids, _, healthy, registered, files, url, programs = rows[name]
        assert (state, healthy, registered, files) == ("RUNNING", "yes", "yes", "1")
        assert programs == f"{name}-rest,{name}-grpc"
        assert len(pids.split(",")) == 2 and url == net.url(name)
    assert rows["maestro"][1] == "RUNNING" and rows["maestro"][4] == "yes"


def test_status_json_and_the_pid_column_in_the_order_of_programs(net):
    doc = json.loads(launcher("status", "--json", "-t", str(net.path)).stdout)
    assert (doc["running"], doc["ok"], doc["problems"]) == (True, True, [])
    pids = net.pids()
    for node in doc["nodes"]:
        assert node["ok"] and node["healthy"] and node["state"] == "RUNNING"
        assert {p["name"]: p["pid"] for p in node["programs"]} == {p["name"]: pids[p["name"]] for p in node["programs"]}
    rows = {line.split()[0]: line.split() for line in launcher("status", str(net.path)).stdout.splitlines()[1:]}
    for name in ("peer1", "peer2", "peer3"):
        column, programs = rows[name][2].split(","), rows[name][8].split(",")
        assert column == [str(pids[program]) for program in programs]


def test_logs_of_every_node_show_requests_transfers_registrations_and_supervisord_events(net):
    assert net.get("peer1", "/files").status_code == 200
    client = [sys.executable, "-m", "peer_app.client", "--maestro", net.url("maestro")]
    got = subprocess.run(
        [*client, "dummy-download", "archivo1.txt", "--from", "peer1"], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr

    def merged() -> str:
        return launcher("logs", "-n", "400", "-t", str(net.path)).stdout

    out = wait_until(lambda: next((text for text in [merged()] if "DummyDownload archivo1.txt: " in text), None))
    assert re.search(r'^peer1-rest\| \[[^]]+\] 127\.0\.0\.1 "GET /files HTTP/1\.1" 200 \d+ \d+ms$', out, re.M)
    assert re.search(
        r"^peer1-grpc\| .* DummyDownload archivo1\.txt: 17 B in [\d.]+ s \([\d.]+ MB/s\) to ipv4:127\.0\.0\.1:",
        out,
        re.M,
    )
    assert re.search(r"^peer2-grpc\| .* registered at http://127\.0\.0\.1:\d+ with 1 file\(s\)$", out, re.M)
    assert re.search(r"^supervisord\| .* success: maestro entered RUNNING state", out, re.M)
    assert re.search(r"^maestro\| .*\"POST /heartbeat HTTP/1\.1\" 200", out, re.M)


def test_logs_show_each_program_of_the_node(net):
    out = launcher("logs", "peer1", "-t", str(net.path)).stdout
    assert "peer1-rest| " in out and "peer1-grpc| " in out


def test_kill_9_of_a_peer_is_restarted_and_reregistered_while_locate_goes_through_the_backup(net):
    # peer1's primary friend is peer2; its backup peer3 holds archivo3.txt
    assert net.topology.peer("peer1").primary == "peer2" and net.topology.peer("peer1").backup == "peer3"
    old = net.pids("peer2")
    answers: list[int | str] = []
    done = threading.Event()

    def locate_in_a_loop() -> None:
        session = new_session()
        while not done.is_set():
            try:
                answers.append(session.get(net.url("peer1") + "/locate?file=archivo3.txt", timeout=5).status_code)
            except requests.RequestException as exc:
                answers.append(type(exc).__name__)

    def back() -> bool:
        pids = net.pids("peer2")
        if any(pid == 0 or pid == old[name] for name, pid in pids.items()):
            return False
        entry = net.registry().get("peer2", {})
        return net.healthy("peer2") and entry.get("alive") and entry.get("last_seen", 0) > killed_at

    poller = threading.Thread(target=locate_in_a_loop)
    poller.start()
    try:
        killed_at = time.time()
        started = time.monotonic()
        launcher("kill", "peer2", "-t", str(net.path))
        wait_until(back, RECOVERY_SECONDS + 2, what="peer2 restarted, healthy and re-registered")
        elapsed = time.monotonic() - started
    finally:
        done.set()
        poller.join()
    assert not any(pid_alive(p) for p in old.values())
    assert answers and set(answers) == {200}, answers
    assert elapsed < RECOVERY_SECONDS, f"peer2 took {elapsed:.2f}s to come back"
    print(f"\npeer2 kill -9 -> healthy+registered in {elapsed:.2f}s; {len(answers)} locates, all 200")
    wait_until(lambda: net.states("peer2") == {"RUNNING"}, 10, what="supervisord to count peer2 RUNNING")


def test_kill_9_of_the_maestro_is_restarted_with_its_directory_intact(net):
    old = net.pids("maestro")["maestro"]
    started = time.monotonic()
    launcher("kill", "maestro", "-t", str(net.path))

    def back() -> bool:
        pid = net.pids("maestro")["maestro"]
        return pid not in (0, old) and health.rest_healthy(net.topology.maestro.url)

    wait_until(back, RECOVERY_SECONDS + 2, what="the Maestro restarted and healthy")
    elapsed = time.monotonic() - started
    # the first answers after the restart already know every file
    for i in (1, 2, 3):
        resp = net.get("maestro", f"/locate?file=archivo{i}.txt")
        assert resp.status_code == 200 and resp.json()["peers"][0]["name"] == f"peer{i}"
    assert not pid_alive(old)
    assert elapsed < RECOVERY_SECONDS, f"the Maestro took {elapsed:.2f}s to come back"
    print(f"\nmaestro kill -9 -> healthy with directory in {elapsed:.2f}s")
    # it answers before supervisord counts it started (startsecs): the next drill wants it RUNNING
    wait_until(lambda: net.states("maestro") == {"RUNNING"}, 10, what="supervisord to count the Maestro RUNNING")


def children(pid: int) -> list[int]:
    """The live processes whose parent is pid (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(errors="replace").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def test_kill_9_of_only_the_maestros_gunicorn_master_takes_its_workers_along_and_spends_no_retry(net):
    """Workers that outlived their master held the port: the next start failed and spent a retry."""
    layout = layout_for(net.topology)
    master = net.pids("maestro")["maestro"]
    workers = children(master)
    assert workers, "the master has no workers"
    events = layout.logfile.stat().st_size
    output = layout.log_path("maestro").stat().st_size
    os.kill(master, signal.SIGKILL)  # the master only, as an OOM killer or a stray kill would
    wait_until(lambda: not any(pid_alive(w) for w in workers), 2, what="the old workers gone with their master")

    def back() -> bool:
        pid = net.pids("maestro")["maestro"]
        return pid not in (0, master) and health.rest_healthy(net.topology.maestro.url)

    wait_until(back, RECOVERY_SECONDS + 2, what="the Maestro restarted and healthy")
    wait_until(lambda: net.states("maestro") == {"RUNNING"}, 10, what="supervisord to count the start as a success")
    with open(layout.logfile, encoding="utf-8", errors="replace") as fh:
        fh.seek(events)
        supervisord = fh.read()
    with open(layout.log_path("maestro"), encoding="utf-8", errors="replace") as fh:
        fh.seek(output)
        maestro = fh.read()
    assert supervisord.count("spawned: 'maestro'") == 1, supervisord  # one start, no retry spent
    assert "exit status" not in supervisord and "cannot bind" not in maestro, (supervisord, maestro)


def test_stop_keeps_a_peer_down_and_the_maestro_marks_it_not_alive_until_start(net):
    launcher("stop", "peer2", "-t", str(net.path))
    assert net.states("peer2") == {"STOPPED"}
    wait_until(
        lambda: net.registry().get("peer2", {}).get("alive") is False, 5, what="the Maestro to mark peer2 not alive"
    )
    assert net.get("maestro", "/locate?file=archivo2.txt").status_code == 404
    assert net.states("peer2") == {"STOPPED"}  # supervisord did not bring it back
    assert not net.healthy("peer2")
    status = launcher("status", "-t", str(net.path), check=False)  # says why it is not all well
    assert status.returncode == 1
    assert status.stderr.startswith("not all is well: peer2: peer2-rest STOPPED, peer2-grpc STOPPED"), status.stderr

    launcher("start", "peer2", "-t", str(net.path))  # returns once healthy + registered
    assert net.registry()["peer2"]["alive"] is True
    assert net.get("maestro", "/locate?file=archivo2.txt").status_code == 200


def test_with_the_maestro_stopped_the_cli_finds_and_downloads_through_the_topologys_peers(net, tmp_path):
    """It used to exit 4, "the Maestro does not answer", while every peer could find the file."""
    launcher("stop", "maestro", "-t", str(net.path))
    try:
        out = tmp_path / "archivo3.txt"
        proc = subprocess.run(
            [sys.executable, "-m", "peer_app.client", "--topology", str(net.path), "download", "archivo3.txt",
             "--out", str(out)],
            cwd=net.path.parent, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "the Maestro does not answer; located through peer1's friends" in proc.stderr
        assert out.read_text(encoding="utf-8") == "hola desde peer3\n"
    finally:
        launcher("start", "maestro", "-t", str(net.path))
    wait_until(lambda: net.states("maestro") == {"RUNNING"}, 10, what="supervisord to count the Maestro RUNNING")


def test_restart_gives_the_node_new_processes_and_waits_for_health(net):
    old = net.pids("peer3")
    launcher("restart", "peer3", "-t", str(net.path))
    new = net.pids("peer3")
    assert all(new[k] not in (0, old[k]) for k in old)
    assert net.healthy("peer3")


def test_up_after_a_settings_change_restarts_the_nodes_with_their_new_config(net):
    old = {name: pid for name, pid in net.pids().items() if name != RESTARTER}  # the event listener is no node
    data = yaml.safe_load(net.path.read_text())
    data["settings"]["heartbeat_interval"] = 0.6
    net.path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = launcher("up", str(net.path))
    assert "config changed, restarting: maestro, peer1, peer2, peer3" in result.stderr
    new = net.pids()
    assert all(new[k] not in (0, old[k]) for k in old)
    assert (
        json.loads(layout_for(net.topology).config_path("peer1").read_text())["settings"]["heartbeat_interval"] == 0.6
    )
    assert all(h.ready for h in health.probe(net.topology).values())
