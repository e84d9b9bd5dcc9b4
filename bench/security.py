"""What the members-only checks cost: Maestro /locate requests/s and download MB/s, same run.

    python -m bench.security [--quick] [--before REV] [--rounds N] [--seconds S] [--size-mib M]

Measures, interleaved round by round so that the machine's load hits every mode alike:
  open           this code, default security: a secret, loopback trusted, `read: open` (GETs
                 and Download need no credential, so the checks only look at the method)
  members        `read: members` and an empty trusted_networks: every /locate and every
                 Download presents the operator's token and is checked
  loopback       `read: members`, loopback trusted, no token: the caller is the operator as the
                 secret file's owner, which the node asks the kernel once per connection
  before         with --before REV: the same load on the code at REV (`git archive`), e.g. the
                 commit before members-only landed, as the baseline
Prints the median of each mode and its ratio to the baseline (`before` when given, else `open`).
Every process runs on 127.0.0.1 with free ports and is stopped by pid; loads are bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.discovery import fill_directory
from common.browsers import HostCheck
from common.local_owner import ConnectionOwners, owner_of_socket
from common.security import MUTATING, READ, Guard, ensure_secret, operator_token, read_secret
from control.generate import free_ports

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
FILE_NAME = "bench.bin"
GUNICORN = [
    "-m",
    "gunicorn",
    "--worker-class",
    "gthread",
    "--workers",
    "2",
    "--threads",
    "4",
    "--graceful-timeout",
    "3",
    "--timeout",
    "30",
    "--keep-alive",
    "1",
    "--no-control-socket",
    "--config",
    "python:common.gunicorn_conf",
]

DOWNLOAD_SCRIPT = r"""
import json, sys, time
args = json.loads(sys.argv[1])
try:
    from common.malloc import tune_malloc
except ImportError:
    from peer_app.transfer import tune_malloc
try:
    from client.download import download
except ImportError:
    from peer_app.download import download
tune_malloc()
options = {}
if args["token"]:
    from client.api import Credentials
    options["credentials"] = Credentials(token=args["token"])
started = time.perf_counter()
download(args["name"], args["out"], [{"name": "peer1", "grpc_address": args["address"]}],
         expected_sha256=args["sha256"], size=args["size"], **options)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""

WRK_SCRIPT = """
local names = {%s}
%s
request = function()
  return wrk.format("GET", "/locate?file=" .. names[math.random(#names)])
end
"""


class Mode:
    """One way of running the code under test: its source tree and its security section."""

    def __init__(self, name: str, root: Path, security: dict | None, token: str | None) -> None:
        self.name = name
        self.root = root
        self.security = security  # None: the code predates the section (omit it)
        self.token = token  # presented on every request when set

    def env(self, config: Path) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.root), "P2P_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}

    def config(self, data: dict, path: Path) -> Path:
        if self.security is not None:
            data = {**data, "security": self.security}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path


def _start(mode: Mode, argv: list[str], config: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=mode.root,
            env=mode.env(config),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_http(url: str, headers: dict, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    host, port = url.split("//")[1].split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=1)
            conn.request("GET", "/health", headers=headers)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


# --- /locate --------------------------------------------------------------------------------------


def _wrk(url: str, names: list[str], token: str | None, seconds: float, tmp: Path) -> float:
    header = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script = tmp / "locate.lua"
    script.write_text(WRK_SCRIPT % (",".join(json.dumps(n) for n in names), header))
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"/locate answered errors under load:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no Requests/sec:\n{out}")
    return float(found.group(1))


def _client(args) -> int:
    host, port, names, seconds, seed, token = args
    import random

    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn = http.client.HTTPConnection(host, port, timeout=10)
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("GET", "/locate?file=" + rng.choice(names), headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"/locate answered {resp.status}")
        done += 1
    return done


def _python_load(url: str, names: list[str], token: str | None, seconds: float) -> float:
    host, port = url.split("//")[1].split(":")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        started = time.monotonic()
        done = pool.map(_client, [(host, int(port), names, seconds, i, token) for i in range(4)])
        elapsed = time.monotonic() - started
    return sum(done) / max(elapsed, seconds)


def locate_rps(mode: Mode, tmp: Path, seconds: float, tool: str) -> float:
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    run = tmp / f"locate-{mode.name}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    names = fill_directory(str(run / "maestro.sqlite3"), 10, 10)
    config = mode.config(
        {
            "role": "maestro",
            "name": "maestro",
            "host": "127.0.0.1",
            "rest_port": port,
            "run_dir": str(run),
            "maestro_url": url,
            "settings": {"rest_workers": 2, "rest_threads": 4},
        },
        run / "maestro.json",
    )
    proc = _start(
        mode, [*GUNICORN, "--bind", f"127.0.0.1:{port}", "maestro_app:create_app()"], config, run / "maestro.log"
    )
    try:
        _wait_http(url, {}, proc)
        load = (
            (lambda s: _wrk(url, names, mode.token, s, run))
            if tool == "wrk"
            else (lambda s: _python_load(url, names, mode.token, s))
        )
        load(1.0)  # warm-up: connections, lazy imports, caches
        return load(seconds)
    finally:
        _stop(proc)


# --- download -------------------------------------------------------------------------------------


def download_mbps(mode: Mode, tmp: Path, source: Path, sha256: str, runs: int) -> list[float]:
    rest, grpc_port = free_ports(2)
    run = tmp / f"download-{mode.name}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    config = mode.config(
        {
            "role": "peer",
            "name": "peer1",
            "host": "127.0.0.1",
            "rest_port": rest,
            "grpc_port": grpc_port,
            "shared_dir": str(source.parent),
            "run_dir": str(run),
            "maestro_url": "http://127.0.0.1:1",
            "settings": {"heartbeat_interval": 60.0},
        },
        run / "peer1.json",
    )
    proc = _start(mode, ["-m", "peer_app.grpc_server", "--config", str(config)], config, run / "peer1.log")
    out = run / "out.bin"
    size = source.stat().st_size
    args = {
        "name": FILE_NAME,
        "out": str(out),
        "address": f"127.0.0.1:{grpc_port}",
        "sha256": sha256,
        "size": size,
        "token": mode.token,
    }
    speeds = []
    try:
        for i in range(runs + 1):  # the first run warms the server (and hashes the file into its index)
            out.unlink(missing_ok=True)
            os.sync()
            done = subprocess.run(
                [sys.executable, "-c", DOWNLOAD_SCRIPT, json.dumps(args)],
                cwd=mode.root,
                env={**os.environ, "PYTHONPATH": str(mode.root)},
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise SystemExit(f"download ({mode.name}) failed:\n{done.stderr[-2000:]}")
            if i:
                speeds.append(size / json.loads(done.stdout.strip().splitlines()[-1])["seconds"] / 1e6)
        return speeds
    finally:
        _stop(proc)
        out.unlink(missing_ok=True)


# --- the run --------------------------------------------------------------------------------------


def modes(tmp: Path, before: str | None) -> list[Mode]:
    secret_file = tmp / ".p2p-secret"
    ensure_secret(secret_file)
    token = operator_token(read_secret(secret_file))
    found = [
        Mode("open", ROOT, {"secret_file": str(secret_file)}, None),
        Mode("members", ROOT, {"secret_file": str(secret_file), "trusted_networks": [], "read": "members"}, token),
        Mode("loopback", ROOT, {"secret_file": str(secret_file), "read": "members"}, None),
    ]
    if before:
        tree = tmp / "before"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", before], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        has_section = (tree / "common" / "security.py").exists()
        found.insert(0, Mode("before", tree, {"secret_file": str(secret_file)} if has_section else None, None))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.security", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s loads, 64 MiB (CI smoke)")
    parser.add_argument("--before", metavar="REV", help="also measure the code at this git revision (baseline)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every mode (default 5)")
    parser.add_argument("--seconds", type=float, default=None, help="/locate load per round (default 5)")
    parser.add_argument("--size-mib", type=int, default=None, help="downloaded file (default 256)")
    parser.add_argument("--only", choices=["locate", "download"], default=None)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    size = (args.size_mib or (64 if args.quick else 256)) * MiB
    tool = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "python")
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp_name:
        tmp = Path(tmp_name)
        all_modes = modes(tmp, args.before)
        base = all_modes[0].name
        rps: dict[str, list[float]] = {m.name: [] for m in all_modes}
        mbps: dict[str, list[float]] = {m.name: [] for m in all_modes}
        source = tmp / "shared" / FILE_NAME
        if args.only != "locate":
            source.parent.mkdir()
            with open(source, "wb") as fh:
                for offset in range(0, size, 8 * MiB):
                    fh.write(os.urandom(min(8 * MiB, size - offset)))
            sha256 = subprocess.run(["sha256sum", str(source)], capture_output=True, text=True).stdout.split()[0]
        for r in range(rounds):
            order = all_modes if r % 2 == 0 else list(reversed(all_modes))
            for mode in order:
                if args.only != "download":
                    rps[mode.name].append(locate_rps(mode, tmp, seconds, tool))
                if args.only != "locate":
                    mbps[mode.name].append(statistics.median(download_mbps(mode, tmp, source, sha256, runs=2)))
            print(
                f"round {r + 1}/{rounds}: "
                + "  ".join(
                    f"{m.name} {rps[m.name][-1] if rps[m.name] else 0:.0f} req/s "
                    f"{mbps[m.name][-1] if mbps[m.name] else 0:.0f} MB/s"
                    for m in all_modes
                ),
                flush=True,
            )
    load = os.getloadavg()
    print(
        f"\n{rounds} round(s), {tool} 64 connections x {seconds:g} s per /locate run, "
        f"{size // MiB} MiB per download; load average {load[0]:.1f} {load[1]:.1f}; baseline: {base}"
    )
    report: dict = {"rounds": rounds, "tool": tool, "baseline": base, "modes": {}, "check_us": check_cost()}
    for mode in all_modes:
        row: dict[str, float] = {}
        # the ratio of each round to the baseline's in the same round, then the median: drift in the
        # machine's load between rounds cancels out
        if rps[mode.name]:
            row["locate_rps"] = round(statistics.median(rps[mode.name]))
            row["locate_ratio"] = paired_ratio(rps[mode.name], rps[base])
        if mbps[mode.name]:
            row["download_mbps"] = round(statistics.median(mbps[mode.name]))
            row["download_ratio"] = paired_ratio(mbps[mode.name], mbps[base])
        report["modes"][mode.name] = row
        print(
            f"  {mode.name:8s} /locate {row.get('locate_rps', '-'):>6} req/s (x{row.get('locate_ratio', '-')})"
            f"   download {row.get('download_mbps', '-'):>5} MB/s (x{row.get('download_ratio', '-')})"
        )
    costs = report["check_us"]
    print("  one check in-process: " + ", ".join(f"{k} {v:.2f} µs" for k, v in costs.items()))
    print(json.dumps(report))


def paired_ratio(values: list[float], baseline: list[float]) -> float:
    """The median of value / baseline, round by round."""
    return round(statistics.median(a / b for a, b in zip(values, baseline, strict=True)), 3)


def check_cost(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per check a request meets (in this process): Host, Guard.check, and the kernel's
    answer to "which account made this connection" (a netlink round trip, once per new connection)."""
    guard = Guard(b"x" * 64, ["127.0.0.0/8"], read="members", local_operator="any")
    owner_guard = Guard(b"x" * 64, ["127.0.0.0/8"], read="members", operator_uids={os.geteuid()})
    header = "Bearer " + operator_token(b"x" * 64)
    open_guard = Guard(b"x" * 64)
    hosts = HostCheck.of_node("127.0.0.1", "", ["p2p.example.org"])
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        owners = ConnectionOwners()
        cases = {
            "host check": lambda: hosts.accepts("127.0.0.1:9000"),
            "read open (skipped)": lambda: open_guard.check(READ, "10.0.0.2", None),
            "trusted address (any account)": lambda: guard.check(MUTATING, "127.0.0.1", None),
            "trusted address, owner known": lambda: owner_guard.check(
                MUTATING, "127.0.0.1", None, lambda: owners.of(accepted)
            ),
            "token": lambda: guard.check(MUTATING, "10.0.0.2", header),
            "owner lookup (new connection)": lambda: owner_of_socket(accepted),
        }
        out = {}
        for name, call in cases.items():
            n = calls // 20 if "lookup" in name else calls
            started = time.perf_counter()
            for _ in range(n):
                call()
            out[name] = (time.perf_counter() - started) / n * 1e6
        client.close()
        accepted.close()
    return out


if __name__ == "__main__":
    main()
