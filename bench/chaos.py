"""Break it on purpose: a network under steady use while nodes are killed, restarted and frozen.

    python -m bench.chaos [--quick] [--seconds 540] [--every 5] [--seed N] [--peers 5]

The launcher brings up a Maestro and --peers peers (a ring, default settings, free ports); one
8 MiB file is shared by peer1, peer2 and peer3. While two clients download it with the CLI again
and again (each copy's sha256 checked) and a third searches from a random peer every half
second, a drill every --every seconds does one of:

  kill-peer       `launcher kill` of a random peer (every process, SIGKILL)
  kill-maestro    `launcher kill maestro`
  kill-grpc       SIGKILL of one holder's gRPC process only, mid-transfer
  restart-peer    `launcher restart` of a random peer (graceful)
  freeze-holder   SIGSTOP of one holder's gRPC process for 3 s, then SIGCONT

and times how long until that node is back: supervisord's RUNNING, /health and gRPC health,
and registered at the Maestro again. At most one node is disturbed at a time, so every
download has a live holder and should succeed. Reports (JSON): drills and their recovery
times, downloads (ok, failed by exit code, and any copy that ended with exit 0 but the wrong
bytes, which must be 0), searches (complete, flagged partial, silently short, no answer), tracebacks in every node's
log, and processes left behind after `down`. `--quick` runs 40 s, for CI's log; never a
pass/fail threshold.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

from bench.load import sha256_of
from control.errors import LauncherError
from control.generate import free_ports, generate
from control.network import Network
from control.topology import load as load_topology
from lab.swarm import digests, make_file

MiB = 1024 * 1024
FILE = "chaos.bin"
HOLDERS = ("peer1", "peer2", "peer3")
BACK_WITHIN = 30.0  # seconds a disturbed node has to be back before it counts as lost
DRILLS = ("kill-peer", "kill-maestro", "kill-grpc", "restart-peer", "freeze-holder")


class Chaos:
    def __init__(self, folder: Path, peers: int, seed: int) -> None:
        self.folder = folder
        doc = generate(peers, free_ports(1 + 2 * peers), ring=True)
        self.path = folder / "topology.yaml"
        self.path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        shared = {p["name"]: folder / p["shared_dir"] for p in doc["peers"]}
        for holder in HOLDERS:
            shared[holder].mkdir(parents=True, exist_ok=True)
            if holder == HOLDERS[0]:
                make_file(shared[holder] / FILE, 8 * MiB)
            else:
                shutil.copyfile(shared[HOLDERS[0]] / FILE, shared[holder] / FILE)
        self.sha = digests(shared[HOLDERS[0]] / FILE)[1]
        self.network = Network(load_topology(self.path))
        self.peers = [p["name"] for p in doc["peers"]]
        self.random = random.Random(seed)  # the drills': the same seed, the same drills on the same nodes
        self.pick = random.Random(seed + 1)  # the searcher's
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.downloads: collections.Counter[str] = collections.Counter()
        self.download_seconds: list[float] = []
        self.failures: list[str] = []
        self.searches: collections.Counter[str] = collections.Counter()
        self.recoveries: dict[str, list[float]] = collections.defaultdict(list)
        self.lost: list[str] = []

    # --- the clients ---------------------------------------------------------------------------

    def downloader(self, n: int) -> None:
        out = self.folder / f"client{n}"
        out.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "peer_app.client", "--topology", str(self.path)]  # as a user in its folder
        i = 0
        while not self.stop.is_set():
            i += 1
            target = out / f"{i}.bin"
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    [*argv, "download", FILE, "--out", str(target)],
                    cwd=self.folder,  # never the project root: a demo's secret file may lie there
                    capture_output=True,
                    text=True,
                    timeout=90,
                    check=False,
                )
                code, why = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1][:160]
            except subprocess.TimeoutExpired:
                code, why = -1, "no end within 90 s"
            took = time.monotonic() - started
            with self.lock:
                if code == 0 and sha256_of(target) != self.sha:
                    self.downloads["corrupt"] += 1
                    self.failures.append(f"exit 0 with the wrong bytes ({took:.1f} s)")
                elif code == 0:
                    self.downloads["ok"] += 1
                    self.download_seconds.append(took)
                else:
                    self.downloads[f"exit {code}"] += 1
                    self.failures.append(f"exit {code} after {took:.1f} s: {why}")
            target.unlink(missing_ok=True)

    def searcher(self) -> None:
        session = requests.Session()
        urls = [p.rest_url for p in self.network.topology.peers]
        while not self.stop.wait(0.5):
            try:
                resp = session.get(self.pick.choice(urls) + "/search", params={"query": "chaos"}, timeout=10)
            except requests.RequestException:
                kind = "no answer"  # the peer asked was the one down
            else:
                body = resp.json() if resp.status_code == 200 else {}
                found = any(r.get("file") == FILE for r in body.get("results", []))
                if resp.status_code != 200:
                    kind = f"http {resp.status_code}"
                elif body.get("complete") is False:
                    kind = "partial"  # said so: some peer did not answer in time
                else:
                    kind = "complete" if found else "silently short"  # the file is held by three peers
            with self.lock:
                self.searches[kind] += 1

    # --- the drills ----------------------------------------------------------------------------

    def grpc_pid(self, peer: str) -> int:
        for row in self.network.status():
            for program in row.programs:
                if program.name == f"{peer}-grpc" and program.pid:
                    return program.pid
        return 0

    def drill(self, kind: str) -> str:
        if kind == "kill-maestro":
            self.network.kill("maestro")
            return "maestro"
        if kind in ("kill-grpc", "freeze-holder"):
            peer = self.random.choice(HOLDERS)
            pid = self.grpc_pid(peer)
            if pid:
                if kind == "kill-grpc":
                    os.kill(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(3.0)
                    os.kill(pid, signal.SIGCONT)
            return peer
        peer = self.random.choice(self.peers)
        if kind == "kill-peer":
            self.network.kill(peer)
        else:
            self.network.restart(peer, timeout=BACK_WITHIN)
        return peer

    def back(self, node: str) -> bool:
        for row in self.network.status():
            if row.node == node:
                return row.state == "RUNNING" and row.health is not None and row.health.ready
        return False

    def run(self, seconds: float, every: float) -> None:
        clients = [threading.Thread(target=self.downloader, args=(n,), daemon=True) for n in (1, 2)]
        clients.append(threading.Thread(target=self.searcher, daemon=True))
        for t in clients:
            t.start()
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            time.sleep(every)
            kind = self.random.choice(DRILLS)
            started = time.monotonic()
            try:
                node = self.drill(kind)
            except LauncherError as err:
                self.lost.append(f"{kind}: {err}")
                continue
            while not self.back(node):
                if time.monotonic() - started > BACK_WITHIN:
                    self.lost.append(f"{kind} {node}")
                    break
                time.sleep(0.1)
            else:
                self.recoveries[kind].append(time.monotonic() - started)
        self.stop.set()
        for t in clients:
            t.join(timeout=100)

    # --- what it left ----------------------------------------------------------------------------

    def tracebacks(self) -> dict[str, int]:
        logs = self.network.rendered.layout.run_dir / "logs"
        found = {}
        for log in sorted(logs.glob("*.log")):
            n = log.read_text(errors="replace").count("Traceback (most recent call last)")
            if n:
                found[log.name] = n
        return found

    def leftovers(self) -> list[int]:
        run_dir = str(self.network.rendered.layout.run_dir)
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if run_dir in cmdline:
                    left.append(int(entry.name))
        return left


def seconds_summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 s of drills (CI's log)")
    parser.add_argument("--seconds", type=float, default=None, help="how long the drills go on (540)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between the end of a drill and the next")
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="the drills' random seed (printed)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (40.0 if args.quick else 540.0)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    report: dict = {"seed": seed, "seconds": seconds, "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        chaos = Chaos(Path(tmp), args.peers, seed)
        chaos.network.up(timeout=120)
        try:
            chaos.run(seconds, args.every)
            report["tracebacks"] = chaos.tracebacks()
        finally:
            chaos.network.down()
        report["left_running_after_down"] = chaos.leftovers()
    report["drills"] = {kind: seconds_summary(chaos.recoveries[kind]) for kind in DRILLS}
    report["not_back_within_s"] = {"limit": BACK_WITHIN, "drills": chaos.lost}
    report["downloads"] = {**chaos.downloads, "seconds": seconds_summary(chaos.download_seconds)}
    report["download_failures"] = chaos.failures[:20]
    report["searches"] = dict(chaos.searches)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
