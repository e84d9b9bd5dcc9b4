"""One topology, three machines: network namespaces on a bridge play the hosts (docs/operations.md, "Several hosts").

The same `python launcher.py up topology.yaml` runs in each namespace from this one checkout:
host A runs the Maestro and peer1, B runs peer2, C runs peer3; every peer's friends are on
other hosts. The namespaces share this machine's filesystem, so each host's run folder must be
its own. Root only (namespaces); skipped with the reason otherwise.

The tests run in file order on one network (module fixture): health, cross-host traffic,
remote status, a kill drill, a partition of B (held until the Maestro has shown B down for 3 s),
then `down` on every host.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.netns import Lab, namespaces, unavailable
from tests.support import ROOT, wait_until

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"multi-host test: {REASON}")

PY = sys.executable
HEARTBEAT = 0.5
EXPIRE_BEATS = 3
REQUEST_TIMEOUT = 1.0
SETTINGS = {
    "heartbeat_interval": HEARTBEAT,
    "expire_after_beats": EXPIRE_BEATS,
    "request_timeout": REQUEST_TIMEOUT,
    "down_mark": 2.0,
    "down_mark_max": 4.0,
    "retry_backoff_max": 1.0,
    "rest_workers": 1,
}
PORTS: dict[str, Any] = {"maestro": 19000, "peer1": (19001, 19002), "peer2": (19003, 19004), "peer3": (19005, 19006)}
OWNER = {"maestro": "a", "peer1": "a", "peer2": "b", "peer3": "c"}
PARTITION = 20.0


class ThreeHosts:
    """The lab, the topology and the commands a user would type on each host."""

    def __init__(self, lab: Lab, folder: Path) -> None:
        self.lab = lab
        self.folder = folder
        self.addr = {h: lab.hosts[h].addr for h in "abc"}
        self.topology = folder / "topology.yaml"
        peers = []
        friends = {"peer1": ("peer2", "peer3"), "peer2": ("peer3", "peer1"), "peer3": ("peer1", "peer2")}
        for i, name in enumerate(["peer1", "peer2", "peer3"], 1):
            rest, grpc = PORTS[name]
            shared = folder / "data" / name
            shared.mkdir(parents=True)
            (shared / f"archivo{i}.txt").write_text(f"hola desde {name}\n", encoding="utf-8")
            peers.append(
                {
                    "name": name,
                    "host": self.addr[OWNER[name]],
                    "rest_port": rest,
                    "grpc_port": grpc,
                    "shared_dir": f"data/{name}",
                    "friends": dict(zip(("primary", "backup"), friends[name], strict=True)),
                }
            )
        doc = {"maestro": {"host": self.addr["a"], "port": PORTS["maestro"]}, "peers": peers, "settings": SETTINGS}
        self.topology.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def url(self, node: str) -> str:
        port = PORTS[node] if node == "maestro" else PORTS[node][0]
        return f"http://{self.addr[OWNER[node]]}:{port}"

    def launcher(self, host: str, *args: str, timeout: float = 90):
        return self.lab.run(host, [PY, str(ROOT / "launcher.py"), *args], cwd=self.folder, timeout=timeout)

    def client(self, host: str, *args: str, timeout: float = 60):
        """The client CLI on host, pointed at this network's topology (its secret, its Maestro)."""
        cmd = [PY, "-m", "peer_app.client", "--maestro", self.url("maestro"), *args]
        env = {**os.environ, "P2P_TOPOLOGY": str(self.topology)}
        return self.lab.run(host, cmd, cwd=ROOT, timeout=timeout, env=env)

    def probe(self, host: str, *args: str) -> dict:
        proc = self.lab.run(host, [PY, "-m", "lab.netns_probe", *args], cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def get(self, host: str, url: str) -> tuple[int, dict]:
        answer = self.probe(host, "get", url)
        return answer["status"], answer["body"]

    def alive(self, host: str = "c") -> dict[str, bool]:
        status, body = self.get(host, f"{self.url('maestro')}/peers")
        return {p["name"]: p["alive"] for p in body["peers"]} if status == 200 else {}


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hosts")
    made: list[str] = []
    with Lab(["a", "b", "c"]) as lab:
        made = list(lab.made)
        net = ThreeHosts(lab, folder)
        try:
            yield net
        finally:
            for h in "abc":  # whatever a failed test left running (down is the last test)
                net.launcher(h, "down", str(net.topology), timeout=60)
            for log in sorted(folder.glob(".run/*/logs/*.log")):
                print(f"--- {log.relative_to(folder)}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:]))
    left = set(made) & set(namespaces())
    assert not left, f"namespaces left behind: {left}"


def test_up_on_each_host_starts_only_its_nodes(hosts):
    # B first: its Maestro (on A) is not up yet; that is a warning, and peer2 keeps trying to register
    out = ok(hosts.launcher("b", "up", str(hosts.topology)))
    assert "warning: the Maestro" in out and "1 node(s) healthy" in out
    out = ok(hosts.launcher("a", "up", str(hosts.topology)))
    assert "2 node(s) healthy" in out
    ok(hosts.launcher("c", "up", str(hosts.topology)))
    # every node healthy and alive at the Maestro, peer2 included, without a restart
    wait_until(lambda: hosts.alive() == {"peer1": True, "peer2": True, "peer3": True}, 15, what="3 peers alive")

    # peer2 introduced itself to its friends once they came up (they were down at its start)
    def introduced() -> bool:
        status, body = hosts.get("b", f"{hosts.url('peer2')}/peers")
        return status == 200 and all(p["last_ok"] for p in body["peers"] if p["role"] != "learned")

    wait_until(introduced, 15, what="peer2's friends answered its introduction")
    for host in "abc":
        ok(hosts.launcher(host, "status", str(hosts.topology), "--all"))
    # one run folder per host, each with its own supervisord
    runs = sorted(p.name for p in (hosts.folder / ".run").iterdir())
    assert runs == [f"topology@{hosts.addr[h]}" for h in "abc"]


def test_status_on_one_host_lists_the_others_as_remote(hosts):
    out = ok(hosts.launcher("a", "status", str(hosts.topology)))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["maestro"][1] == "RUNNING" and rows["peer1"][1] == "RUNNING"
    for peer in ("peer2", "peer3"):
        assert rows[peer][1] == "REMOTE" and rows[peer][4:6] == ["yes", "yes"], out  # healthy, registered


def test_verbs_on_a_remote_node_exit_2_naming_its_host(hosts):
    for verb in ("stop", "start", "restart", "kill", "logs"):
        proc = hosts.launcher("a", verb, "peer2", "-t", str(hosts.topology))
        assert proc.returncode == 2, (verb, proc.stdout, proc.stderr)
        assert hosts.addr["b"] in proc.stderr and f"launcher.py {verb} peer2" in proc.stderr


def test_locate_search_download_and_upload_across_hosts(hosts, tmp_path):
    out = ok(hosts.client("c", "locate", "archivo2.txt"))
    assert "peer2" in out
    out = ok(hosts.client("c", "locate", "archivo1.txt", "--via-peer", hosts.url("peer3")))  # P2P, no Maestro
    assert "peer1" in out
    out = ok(hosts.client("a", "search", "archivo", "--peer", hosts.url("peer1")))
    assert all(f"archivo{i}.txt  on peer{i}" in out for i in (1, 2, 3)), out
    target = tmp_path / "archivo2.txt"
    ok(hosts.client("c", "download", "archivo2.txt", "--out", str(target)))
    assert target.read_text() == "hola desde peer2\n"
    source = tmp_path / "subido.txt"
    source.write_text("de A a C\n")
    ok(hosts.client("a", "upload", str(source), "--to", hosts.url("peer3")))
    assert (hosts.folder / "data" / "peer3" / "subido.txt").read_text() == "de A a C\n"
    wait_until(lambda: "peer3" in ok(hosts.client("b", "locate", "subido.txt")), 10, what="upload registered")


def test_kill_drill_on_host_b(hosts):
    before = ok(hosts.launcher("b", "status", str(hosts.topology)))
    ok(hosts.launcher("b", "kill", "peer2", "-t", str(hosts.topology)))
    wait_until(lambda: hosts.launcher("b", "status", str(hosts.topology)).returncode == 0, 20, what="peer2 back")
    after = ok(hosts.launcher("b", "status", str(hosts.topology)))
    assert before.split("peer2")[1].split()[1] != after.split("peer2")[1].split()[1]  # new pids
    wait_until(lambda: hosts.alive().get("peer2") is True, 10, what="peer2 alive again")


def _when(rows: list[dict], after: float, alive: bool) -> float | None:
    return next((r["t"] for r in rows if r["t"] > after and r["alive"] is alive), None)


def _rows(log: Path) -> list[dict]:
    """The poller's lines so far (one still being written is left for the next read)."""
    rows = []
    for line in log.read_text().splitlines() if log.exists() else []:
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def test_partition_of_b_is_noticed_routed_around_and_healed(hosts, tmp_path):
    expiry = HEARTBEAT * EXPIRE_BEATS
    log = tmp_path / "alive.jsonl"
    poller = hosts.lab.popen(
        "a",
        [PY, "-m", "lab.netns_probe", "alive", hosts.url("maestro"), "peer2", str(PARTITION + 8), str(log)],
        cwd=ROOT,
    )
    try:
        wait_until(lambda: log.exists() and log.read_text().count("true") >= 2, 10, what="poller running")
        cut = time.time()
        hosts.lab.partition("b")
        # peer1's primary friend (peer2) is cut off: P2P lookups of peer3's file route around it
        locates = hosts.probe("a", "time", f"{hosts.url('peer1')}/locate?file=archivo3.txt", "12", "0.25")
        searches = hosts.probe("a", "time", f"{hosts.url('peer1')}/search?query=archivo3", "4", "0.25")

        def down_for_a_while() -> bool:  # the partition lasts until the Maestro has shown B down for 3 s
            rows = _rows(log)
            down = _when(rows, cut, False)
            return down is not None and rows[-1]["t"] > down + 3.0

        wait_until(down_for_a_while, PARTITION, what="peer2 not alive at the Maestro for 3 s")
        healed = time.time()
        hosts.lab.heal("b")
        wait_until(lambda: _when(_rows(log), healed, True) is not None, 10, what="peer2 alive again at the Maestro")
    finally:
        hosts.lab.heal("b")
        poller.kill()
        poller.wait(10)
    rows = _rows(log)
    down, back = _when(rows, cut, False), _when(rows, healed, True)
    print(
        f"partition: peer2 not alive at +{(down or 0) - cut:.2f}s (expiry {expiry}s + one beat {HEARTBEAT}s), "
        f"alive again {(back or 0) - healed:.2f}s after the heal; /locate on peer1 during it: {locates['seconds']}; "
        f"/search: {searches['seconds']}"
    )
    assert down is not None and down - cut <= expiry + HEARTBEAT + 0.2, "B not marked down in time"
    assert all(r["alive"] is False for r in rows if down + 0.3 < r["t"] < healed), "B seen alive while cut off"
    assert back is not None and back - healed <= HEARTBEAT + 0.3, "B not alive again within one beat of the heal"
    assert set(locates["codes"]) == {200} and set(searches["codes"]) == {200}
    slow = [s for s in locates["seconds"] if s >= REQUEST_TIMEOUT * 0.9]
    assert len(slow) <= 2, f"lookups kept paying the cut-off friend's timeout: {locates['seconds']}"
    assert statistics.median(locates["seconds"]) < 0.2 and statistics.median(searches["seconds"]) < 0.5
    # after the heal, peer2's own file is found through peer1 again (its down mark runs out by itself)
    wait_until(lambda: hosts.get("a", f"{hosts.url('peer1')}/locate?file=archivo2.txt")[0] == 200, 10, what="P2P to B")


def test_down_on_each_host_leaves_nothing(hosts):
    for host in "abc":
        ok(hosts.launcher(host, "down", str(hosts.topology)))
    for host in "abc":
        assert hosts.lab.pids(host) == [], f"processes left on {host}"
    status = hosts.launcher("a", "status", str(hosts.topology), "--all")
    assert status.returncode == 3 and "DOWN" in status.stdout  # 3: the network is not running here (docs/api.md)
