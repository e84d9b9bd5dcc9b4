"""Load and abuse on the gRPC transfer path of a 10-peer ring: what stalls, what lies.

    python -m bench.load [--quick] [--only NAME ...] [--json PATH]

A real network (the launcher brings up a Maestro and 10 peers on free ports, default
settings) and real clients: the CLI as a user runs it, and raw gRPC calls for the abuse.
First a baseline on the quiet ring (health latency, the CLI downloads the scenarios repeat);
the summary at the end gives each figure beside it. Scenarios, each measured the same way
before and after a change:

  idle-uploads     one client opens 24 Upload calls on peer5 and never sends a byte
  unread-downloads one client opens 16 Download calls of a 64 MiB file on peer5, never reads
  stopped-client   a client process reads a little of 16 Downloads on peer5, then is SIGSTOPped
                   For these three, during the attack: gRPC health latency on peer5 (worst, and
                   probes slower than 1 s), another client's CLI download from peer5 (first
                   result, and seconds until one succeeds), seconds until peer5 has a free
                   transfer slot again, and tracebacks the attack left in peer5's gRPC log.
  burst            32 CLI downloads of a 16 MiB file (held by peer1-3) released together:
                   how many succeed with the right sha256, exit codes, wall time
  burst-one-holder the same 32 downloads, all `--from peer1` (one popular holder)
  dead-holder      a 16 MiB file on peer6-8; peer7's gRPC process is SIGSTOPped while the
                   Maestro still lists it: CLI download time against the same download with
                   all three holders up, in the same run
  memory           VmRSS of the holders' and peer5's gRPC processes before any load, right
                   after the load, and after 10 s idle (4 s with --quick)

Everything binds 127.0.0.1 on free ports; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2

from common import transfer_pb2, transfer_pb2_grpc
from common.rpc import health_stub
from control.generate import free_ports, generate
from control.render import layout_for
from control.supervisor import Supervisor
from control.topology import load as load_topology

ROOT = Path(__file__).resolve().parent.parent
PEERS = 10
MiB = 1024 * 1024
ATTACKED = "peer5"
RAW_OPTIONS = [("grpc.max_receive_message_length", 16 * MiB)]


# -- the network -----------------------------------------------------------------------------
def _fill(path: Path, size: int, seed: bytes) -> str:
    """Write size pseudo-random bytes (deterministic per seed); return their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha512(seed).digest() * (MiB // 64)
    with open(path, "wb") as fh:
        written = 0
        counter = 0
        while written < size:
            data = bytes([counter & 0xFF]) + block[1:]
            data = data[: size - written]
            fh.write(data)
            digest.update(data)
            written += len(data)
            counter += 1
    return digest.hexdigest()


class Ring:
    """A 10-peer ring brought up by the launcher in a temporary folder."""

    def __init__(self, folder: Path, sizes: dict[str, int], settings: dict | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.doc = generate(PEERS, free_ports(1 + 2 * PEERS), settings=settings)
        self.path = folder / "topology.yaml"
        self.path.write_text(yaml.safe_dump(self.doc, sort_keys=False), encoding="utf-8")
        self.peers = {p["name"]: p for p in self.doc["peers"]}
        self.maestro_url = f"http://127.0.0.1:{self.doc['maestro']['port']}"
        self.sha: dict[str, str] = {}
        placement = {
            "big.bin": ["peer1", "peer2", "peer3"],
            "hold.bin": [ATTACKED],
            "victim.bin": [ATTACKED],
            "dead.bin": ["peer6", "peer7", "peer8"],
        }
        for name, holders in placement.items():
            for holder in holders:
                shared = folder / self.peers[holder]["shared_dir"]
                shared.mkdir(parents=True, exist_ok=True)
                self.sha[name] = _fill(shared / name, sizes[name], name.encode())

    def launcher(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "launcher.py"), *args, str(self.path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> float:
        started = time.monotonic()
        proc = self.launcher("up")
        if proc.returncode != 0:
            self.down()
            raise SystemExit(f"launcher up failed ({proc.returncode}):\n{proc.stderr}")
        return time.monotonic() - started

    def down(self) -> None:
        self.launcher("down", timeout=60)

    def grpc_address(self, peer: str) -> str:
        return f"127.0.0.1:{self.peers[peer]['grpc_port']}"

    def rest_url(self, peer: str) -> str:
        return f"http://127.0.0.1:{self.peers[peer]['rest_port']}"

    def run_dir(self) -> Path:
        return self.folder / ".run" / self.path.stem

    def log(self, program: str) -> Path:
        return self.run_dir() / "logs" / f"{program}.log"

    def pid(self, program: str) -> int:
        """The pid of a supervisord program (e.g. peer5-grpc)."""
        for proc in Supervisor(layout_for(load_topology(self.path))).processes():
            if proc.name == program and proc.pid > 0:
                return proc.pid
        raise SystemExit(f"{program} is not running")


def rss_mib(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> float:
        match = re.search(rf"^{name}:\s+(\d+) kB", status, re.M)
        return round(int(match.group(1)) / 1024, 1) if match else 0.0

    threads = re.search(r"Threads:\s+(\d+)", status)
    return {"rss": field("VmRSS"), "hwm": field("VmHWM"), "threads": int(threads[1]) if threads else 0}


def log_text(path: Path, since: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(since)
        return fh.read().decode("utf-8", "replace")


def tracebacks(path: Path, since: int) -> int:
    return log_text(path, since).count("Traceback (most recent call last)")


# -- probes ----------------------------------------------------------------------------------
class HealthProbe(threading.Thread):
    """gRPC health Check on one peer every 0.25 s (3 s timeout); latencies of each probe."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.stub = health_stub(self.channel)
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        request = health_pb2.HealthCheckRequest(service="p2pnet.FileTransfer")
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.stub.Check(request, timeout=3.0, wait_for_ready=True)
            except grpc.RpcError:
                self.failures += 1
                self.latencies.append(3.0)
            else:
                self.latencies.append(time.monotonic() - started)
            self.stop.wait(0.25)

    def report(self) -> dict:
        self.stop.set()
        self.join(5)
        self.channel.close()
        lat = self.latencies or [0.0]
        return {
            "probes": len(self.latencies),
            "worst_s": round(max(lat), 3),
            "p50_s": round(statistics.median(lat), 4),
            "over_1s": sum(1 for x in lat if x > 1.0),
            "failed": self.failures,
        }


def slot_free(address: str, name: str) -> bool:
    """True when the peer serves a one-byte Download now (a transfer slot is free), asked as a new client."""
    with grpc.insecure_channel(address, options=[*RAW_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        try:
            call = stub.Download(transfer_pb2.FileRequest(filename=name, offset=0, length=1), timeout=2.0)
            for _ in call:
                pass
        except grpc.RpcError:
            return False
    return True


def cli(*args: str, timeout: float = 60.0) -> tuple[int, float, str]:
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "peer_app.client", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, time.monotonic() - started, f"no answer within {timeout:g}s"
    line = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, time.monotonic() - started, line[:160]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


# -- the attacks -----------------------------------------------------------------------------
class IdleUploads:
    """n Upload calls on one channel that never send a message."""

    def __init__(self, address: str, n: int) -> None:
        self.channel = grpc.insecure_channel(address, options=RAW_OPTIONS)
        stub = transfer_pb2_grpc.FileTransferStub(self.channel)
        self.release = threading.Event()

        def nothing():
            self.release.wait()
            return
            yield  # a generator that yields nothing until released

        self.calls = [stub.Upload.future(nothing()) for _ in range(n)]
        time.sleep(1.0)  # no message comes back from an idle upload: give the calls a moment to land
        self.held = sum(1 for c in self.calls if not c.done())  # the rest were refused at once

    def ended(self) -> int:
        return sum(1 for c in self.calls if c.done())

    def stop(self) -> None:
        for call in self.calls:
            call.cancel()
        self.release.set()
        self.channel.close()


class UnreadDownloads:
    """n Download calls of a large file on one channel; nothing is ever read."""

    def __init__(self, address: str, name: str, n: int) -> None:
        self.channel = grpc.insecure_channel(address, options=RAW_OPTIONS)
        stub = transfer_pb2_grpc.FileTransferStub(self.channel)
        self.calls = [stub.Download(transfer_pb2.FileRequest(filename=name)) for _ in range(n)]
        for call in self.calls:  # in place: the server sent its first message (or refused the call)
            with contextlib.suppress(grpc.RpcError):
                call.initial_metadata()
        time.sleep(1.0)  # a refusal's status may come a moment after its (empty) metadata
        self.held = sum(1 for c in self.calls if c.is_active())

    def ended(self) -> int:
        return sum(1 for c in self.calls if not c.is_active())

    def stop(self) -> None:
        for call in self.calls:
            call.cancel()
        self.channel.close()


STOPPED_CLIENT = r"""
import sys, grpc
from common import transfer_pb2, transfer_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_receive_message_length", 16 << 20)])
stub = transfer_pb2_grpc.FileTransferStub(channel)
calls = [stub.Download(transfer_pb2.FileRequest(filename=sys.argv[2])) for _ in range(int(sys.argv[3]))]
held = 0
for call in calls:
    try:
        next(call)
        held += 1
    except grpc.RpcError:
        pass
print("reading", held, flush=True)
sys.stdin.read()
"""


class StoppedClient:
    """A process that starts n Downloads, reads one chunk of each, then is SIGSTOPped."""

    def __init__(self, address: str, name: str, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STOPPED_CLIENT, address, name, str(n)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None  # piped above
        line = self.proc.stdout.readline()
        if "reading" not in line:
            self.stop()
            raise SystemExit("the stopped-client helper did not start its downloads")
        self.held = int(line.split()[1])
        os.kill(self.proc.pid, signal.SIGSTOP)

    def ended(self) -> int:
        return 0

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.wait(10)


def health_once(address: str) -> float:
    with grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3.0, wait_for_ready=True)
        return time.monotonic() - started


def baseline(ring: Ring, out: Path) -> dict:
    """The same probes on a quiet network: what the attacks and the burst are compared with."""
    address = ring.grpc_address(ATTACKED)
    health = [health_once(address) for _ in range(10)]
    victim = [
        cli("--maestro", ring.maestro_url, "download", "victim.bin", "--from", ring.rest_url(ATTACKED), "--out",
            str(out / "victim.bin"), "--overwrite")[1]
        for _ in range(3)
    ]  # fmt: skip
    big = [
        cli("--maestro", ring.maestro_url, "download", "big.bin", "--out", str(out / "big.bin"), "--overwrite")[1]
        for _ in range(2)
    ]
    return {
        "health_p50_s": round(statistics.median(health), 4),
        "health_worst_s": round(max(health), 4),
        "victim_download_s": round(min(victim), 2),
        "big_download_s": round(min(big), 2),
    }


def attack(ring: Ring, out: Path, make, window: float) -> dict:
    """Run one attack on ATTACKED for up to window seconds, measuring what a user sees."""
    address = ring.grpc_address(ATTACKED)
    log = ring.log(f"{ATTACKED}-grpc")
    log_start = log.stat().st_size
    probe = HealthProbe(address)
    started = time.monotonic()
    attacker = make(address)
    held_since = time.monotonic()
    probe.start()
    downloads: list[dict] = []
    first_ok: float | None = None
    slot_back: float | None = None
    deadline = held_since + window
    target = out / "victim.bin"
    cut_after: float | None = None
    while time.monotonic() < deadline and (first_ok is None or slot_back is None or cut_after is None):
        # The server logs each call it ends ("cut by this peer": its idle/stall limits) or sees end
        # ("cut by the client": e.g. its keepalive gave up on a stopped client).
        if cut_after is None and log_text(log, log_start).count(" cut by ") >= attacker.held:
            cut_after = time.monotonic() - started  # since the attack began
        if slot_back is None and slot_free(address, "victim.bin"):
            slot_back = time.monotonic() - held_since
        if first_ok is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            remaining = max(1.0, deadline - time.monotonic())
            rc, seconds, line = cli(
                "--maestro",
                ring.maestro_url,
                "download",
                "victim.bin",
                "--from",
                ring.rest_url(ATTACKED),
                "--out",
                str(target),
                "--overwrite",
                timeout=remaining + 5,
            )
            downloads.append({"rc": rc, "s": round(seconds, 2), "err": line if rc else ""})
            if rc == 0 and sha256_of(target) == ring.sha["victim.bin"]:
                first_ok = time.monotonic() - held_since
        time.sleep(0.5)
    ended_by_server = attacker.ended()
    health = probe.report()
    attacker.stop()
    time.sleep(1.0)  # let the server log what the cancellation did
    return {
        "health": health,
        "other_download_first": downloads[0] if downloads else None,
        "other_download_tries": len(downloads),
        "other_download_ok_after_s": round(first_ok, 1) if first_ok is not None else f">{window:g}",
        "slot_free_after_s": round(slot_back, 1) if slot_back is not None else f">{window:g}",
        "calls_held": attacker.held,
        "held_calls_ended_after_s": round(cut_after, 1) if cut_after is not None else f">{window:g}",
        "cut_by_this_peer": log_text(log, log_start).count("cut by this peer"),
        "calls_ended_by_server": ended_by_server,
        "tracebacks": tracebacks(log, log_start),
        "seconds": round(time.monotonic() - started, 1),
    }


def burst(ring: Ring, out: Path, n: int, source: str | None = None) -> dict:
    """n CLI downloads of big.bin released together (from its three holders, or from source only)."""
    only = ["--from", ring.rest_url(source)] if source else []
    folder = out / "burst"
    folder.mkdir(exist_ok=True)
    started = time.monotonic()
    procs = []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "peer_app.client",
                    "--maestro",
                    ring.maestro_url,
                    "download",
                    "big.bin",
                    "--out",
                    str(folder / f"big-{i}.bin"),
                    *only,
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    codes: dict[str, int] = {}
    errors: list[str] = []
    ok = 0
    for i, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        codes[str(proc.returncode)] = codes.get(str(proc.returncode), 0) + 1
        path = folder / f"big-{i}.bin"
        if proc.returncode == 0 and path.exists() and sha256_of(path) == ring.sha["big.bin"]:
            ok += 1
        elif err.strip():
            errors.append(err.strip().splitlines()[-1][:160])
    shutil.rmtree(folder)
    return {
        "downloads": n,
        "ok_sha256": ok,
        "exit_codes": codes,
        "seconds": round(time.monotonic() - started, 1),
        "errors": sorted(set(errors))[:3],
    }


def dead_holder(ring: Ring, out: Path) -> dict:
    """dead.bin from peer6-8, all up, then with peer7's gRPC process SIGSTOPped."""
    target = out / "dead.bin"

    def fetch() -> tuple[int, float, str]:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return cli("--maestro", ring.maestro_url, "download", "dead.bin", "--out", str(target))

    baseline = [fetch() for _ in range(2)]
    pid = ring.pid("peer7-grpc")
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = fetch()
    finally:
        os.kill(pid, signal.SIGCONT)
    ok = stopped[0] == 0 and sha256_of(target) == ring.sha["dead.bin"]
    return {
        "all_up_s": round(min(b[1] for b in baseline), 2),
        "one_stopped_s": round(stopped[1], 2),
        "one_stopped_rc": stopped[0],
        "one_stopped_ok": ok,
        "cost_s": round(stopped[1] - min(b[1] for b in baseline), 2),
        "err": stopped[2] if stopped[0] else "",
    }


# -- main ------------------------------------------------------------------------------------
SCENARIOS = ("idle-uploads", "unread-downloads", "stopped-client", "burst", "burst-one-holder", "dead-holder")


QUICK_SETTINGS = {"transfer_idle_timeout": 3.0}  # --quick: cuts come sooner, the same mechanism


def run(quick: bool, only: list[str], settings: dict | None) -> dict:
    window = 15.0 if quick else 30.0
    if quick and settings is None:
        settings = QUICK_SETTINGS
        only = only or [s for s in SCENARIOS if s != "burst"]
    sizes = {"big.bin": 16 * MiB, "hold.bin": 64 * MiB, "victim.bin": 4 * MiB, "dead.bin": 16 * MiB}
    report: dict = {
        "machine": {"load_avg": os.getloadavg(), "cpus": os.cpu_count()},
        "quick": quick,
        "settings": settings or "defaults",
    }
    tmp = Path(tempfile.mkdtemp(prefix="p2p9-load-"))
    ring = Ring(tmp / "net", sizes, settings)
    out = tmp / "out"
    out.mkdir()
    try:
        report["up_s"] = round(ring.up(), 1)
        watched = {p: ring.pid(f"{p}-grpc") for p in ("peer1", ATTACKED)}
        report["memory"] = {"before": {p: rss_mib(pid) for p, pid in watched.items()}}
        report["baseline"] = baseline(ring, out)
        attacks = {
            "idle-uploads": lambda a: IdleUploads(a, 24),
            "unread-downloads": lambda a: UnreadDownloads(a, "hold.bin", 16),
            "stopped-client": lambda a: StoppedClient(a, "hold.bin", 16),
        }
        for name in SCENARIOS:
            if only and name not in only:
                continue
            print(f"-- {name}", file=sys.stderr, flush=True)
            if name in attacks:
                report[name] = attack(ring, out, attacks[name], window * (2 if name == "stopped-client" else 1))
            elif name == "burst":
                report[name] = burst(ring, out, 32)
            elif name == "burst-one-holder":
                report[name] = burst(ring, out, 32, source="peer1")
            else:
                report[name] = dead_holder(ring, out)
            print(json.dumps(report[name]), file=sys.stderr, flush=True)
        report["memory"]["after"] = {p: rss_mib(pid) for p, pid in watched.items()}
        time.sleep(4 if quick else 10)
        report["memory"]["idle"] = {p: rss_mib(pid) for p, pid in watched.items()}
    finally:
        ring.down()
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["load_avg_end"] = os.getloadavg()
    return report


def summary(report: dict) -> str:
    """The figures that matter, with ratios against the same run's quiet baseline."""
    base = report.get("baseline", {})
    lines = [f"machine: load average {report['machine']['load_avg'][0]:.1f} at start, 2 cores; ring up in "
             f"{report.get('up_s')}s; quiet: health p50 {base.get('health_p50_s')}s, 4 MiB download "
             f"{base.get('victim_download_s')}s, 16 MiB download {base.get('big_download_s')}s"]  # fmt: skip
    for name in ("idle-uploads", "unread-downloads", "stopped-client"):
        r = report.get(name)
        if not r:
            continue
        first = r["other_download_first"] or {}
        ratio = first.get("s", 0) / base["victim_download_s"] if base.get("victim_download_s") else 0
        lines.append(
            f"{name}: health worst {r['health']['worst_s']}s ({r['health']['over_1s']} of {r['health']['probes']} "
            f"probes over 1s); another client's download: first try rc {first.get('rc')} in {first.get('s')}s "
            f"(x{ratio:.1f} the quiet time), ok after {r['other_download_ok_after_s']}s; a slot free after "
            f"{r['slot_free_after_s']}s; the {r.get('calls_held')} held calls ended after "
            f"{r.get('held_calls_ended_after_s')}s ({r.get('cut_by_this_peer')} by the idle/stall limits); "
            f"{r['tracebacks']} tracebacks"
        )
    for name in ("burst", "burst-one-holder"):
        r = report.get(name)
        if r:
            alone = base.get("big_download_s") or 0
            lines.append(
                f"{name}: {r['ok_sha256']}/{r['downloads']} right sha256, exit codes {r['exit_codes']}, "
                f"{r['seconds']}s in all (one alone {alone}s: x{r['seconds'] / alone if alone else 0:.1f})"
            )
    r = report.get("dead-holder")
    if r:
        lines.append(f"dead-holder: {r['one_stopped_s']}s with peer7 stopped vs {r['all_up_s']}s all up "
                     f"(+{r['cost_s']}s), rc {r['one_stopped_rc']}")  # fmt: skip
    mem = report.get("memory", {})
    for peer in mem.get("before", {}):
        lines.append(
            f"memory {peer}-grpc RSS: {mem['before'][peer]['rss']} MiB before, "
            f"{mem.get('after', {}).get(peer, {}).get('rss')} after the load, "
            f"{mem.get('idle', {}).get(peer, {}).get('rss')} after a while idle"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for CI: 15 s windows, transfer_idle_timeout 3 s, no three-holder burst, 4 s idle before the last RSS",
    )
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=[], help="run only these scenarios")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--settings", help="topology settings as JSON, e.g. '{\"transfer_idle_timeout\": 5}'")
    args = parser.parse_args(argv)
    report = run(args.quick, args.only, json.loads(args.settings) if args.settings else None)
    text = json.dumps(report, indent=2)
    print(text)
    print(summary(report))
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
