"""Download speed on loopback: raw TCP, the fast lane (1 and 2 sources) and the gRPC stream,
through the library and through the CLI, in one run.

    python -m bench.transfer [--sizes 512,2048] [--runs 3] [--quick] [--json]

Everything runs as separate processes on 127.0.0.1: a real network (a Maestro and two
peers, each with its REST and gRPC processes, both sharing the same files), a raw TCP
baseline (server `os.sendfile`, client `recv_into` + write to disk, no hashing), and one
client process per download:

- library: a process that calls client.download.download() with the holders and digests
  that /locate gave (lane: BLAKE3 verified; stream: lanes=False, sha256 verified);
- CLI: `python -m peer_app.client download NAME` as a user types it, timed from spawn to
  exit (start-up, locate at the Maestro, transfer, verification, rename), plus
  `python -m peer_app.client locate NAME`, the CLI's own floor.

Kinds are interleaved run by run, so a load change hits all of them alike. Prints MB/s
(median, best in brackets), the ratio of medians to raw TCP, client CPU seconds per GiB,
peak RSS of the clients and of the peers' gRPC processes, and the fast lane's target: the
CLI's 2-source download against (raw TCP time + CLI locate time) / 0.75.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.procs import cpu_seconds, peak_rss_kib
from control.processes import PROJECT_ROOT

MiB = 1024 * 1024
TARGET = 0.75  # docs/performance.md: the CLI's download at least this fast as raw TCP + the CLI's locate
CLI = [sys.executable, "-m", "peer_app.client"]
KINDS = [
    # (key, label, what runs it)
    ("raw", "raw TCP (sendfile -> recv_into + write)", "raw"),
    ("lane1", "library, lane, 1 source, BLAKE3", "lib"),
    ("lane2", "library, lane, 2 sources, BLAKE3", "lib"),
    ("stream1", "library, gRPC stream, 1 source, sha256", "lib"),
    ("cli_lane2", "CLI download (lanes, 2 sources)", "cli"),
    ("cli_lane1", "CLI download --sources 1", "cli"),
    ("cli_stream", "CLI download --no-lane (2 sources)", "cli"),
    ("cli_locate", "CLI locate", "cli"),
]
QUICK_KINDS = ["raw", "lane1", "lane2", "stream1", "cli_lane2", "cli_stream", "cli_locate"]


def _make_file(path: Path, size: int) -> None:
    block = 8 * MiB
    with open(path, "wb") as fh:
        for offset in range(0, size, block):
            fh.write(os.urandom(min(block, size - offset)))


# -- child processes ------------------------------------------------------------------------------
def raw_serve(folder: str) -> None:
    """Serve the file named in each connection's first line with sendfile (the baseline's server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            conn, _ = listener.accept()
            with conn:
                name = conn.recv(256).decode().strip()
                with open(os.path.join(folder, name), "rb") as fh:
                    size, offset = os.fstat(fh.fileno()).st_size, 0
                    while offset < size:
                        offset += os.sendfile(conn.fileno(), fh.fileno(), offset, size - offset)


def raw_fetch(port: int, name: str, out: str) -> dict:
    """Receive until EOF with recv_into, writing to out (the baseline's client)."""
    started = time.perf_counter()
    buf = bytearray(MiB)
    view = memoryview(buf)
    received = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(name.encode() + b"\n")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := conn.recv_into(buf):
                os.write(fd, view[:n])
                received += n
        finally:
            os.close(fd)
    return {"seconds": time.perf_counter() - started, "bytes": received}


def lib_fetch(out: str, name: str, lanes: str, holders_json: str) -> dict:
    """Download with the project's library from the holders /locate gave."""
    from client.download import download
    from common.malloc import tune_malloc

    tune_malloc()
    holders = json.loads(holders_json)
    started = time.perf_counter()
    result = download(
        name,
        out,
        holders,
        expected_sha256=holders[0]["sha256"],
        size=holders[0]["size"],
        lanes=lanes == "lanes",
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": result.size, "verified": result.verified, "lane_bytes": result.lane_bytes}


def child(argv: list[str]) -> None:
    role = argv[0]
    if role == "_raw-serve":
        raw_serve(argv[1])
        return
    report = raw_fetch(int(argv[1]), argv[2], argv[3]) if role == "_raw-fetch" else lib_fetch(*argv[1:5])
    report["rss_kib"] = peak_rss_kib()
    print(json.dumps(report), flush=True)


# -- the benchmark ------------------------------------------------------------------------------
# Runs a command and reports its wall time and rusage. A bare interpreter (-S, a few MiB) forks
# it, so its ru_maxrss is its own: exec keeps the forking process's peak RSS as a floor, and
# this benchmark's process is much larger than the wrapper.
_WRAPPER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as fh:
    json.dump({"seconds": seconds, "status": os.waitstatus_to_exitcode(status),
               "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss}, fh)
"""


def _timed(argv: list[str]) -> tuple[float, str, dict]:
    """Run argv to its end; (wall seconds from fork to exit, stdout, its CPU seconds and peak RSS)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as figures:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", _WRAPPER, figures.name, *argv],
            cwd=PROJECT_ROOT,
            capture_output=True,
            timeout=900,
        )
        data = json.loads(figures.read() or "{}")
    if proc.returncode != 0 or data.get("status") != 0:
        raise SystemExit(f"{' '.join(argv[2:6])} failed ({data}): {proc.stderr.decode()[-500:]}")
    return data["seconds"], proc.stdout.decode(), {"cpu": data["cpu"], "rss_kib": data["rss_kib"]}


def _clean(out: Path) -> None:
    for entry in out.iterdir():
        entry.unlink()
    os.sync()  # start every run without the last one's dirty pages in flight


def _run(kind: str, name: str, target: Path, ctx: dict) -> dict:
    """One download (or locate) of the given kind; its seconds, client CPU and peak RSS."""
    here = [sys.executable, "-m", "bench.transfer"]
    maestro = ["--maestro", ctx["maestro"]]
    if kind == "raw":
        argv = here + ["_raw-fetch", str(ctx["raw_port"]), name, str(target)]
    elif kind in ("lane1", "lane2", "stream1"):
        holders = ctx["holders"][name][: 1 if kind.endswith("1") else 2]
        argv = here + ["_fetch", str(target), name, "stream" if kind == "stream1" else "lanes", json.dumps(holders)]
    elif kind == "cli_locate":
        argv = CLI + maestro + ["locate", name]
    else:
        extra = {"cli_lane2": [], "cli_lane1": ["--sources", "1"], "cli_stream": ["--no-lane"]}[kind]
        argv = CLI + maestro + ["download", name, "--out", str(target), *extra]
    servers = [ctx["raw_pid"]] if kind == "raw" else ctx["grpc_pids"]
    servers_before = cpu_seconds(servers)
    seconds, out, usage = _timed(argv)
    usage["server_cpu"] = cpu_seconds(servers) - servers_before
    if kind in ("raw", "lane1", "lane2", "stream1"):
        report = json.loads(out.strip().splitlines()[-1])
        usage["rss_kib"] = report["rss_kib"]  # VmHWM of the child itself
        if kind != "raw":
            expected = "sha256" if kind == "stream1" else "blake3"
            if report["verified"] != expected or (kind != "stream1" and not report["lane_bytes"]):
                raise SystemExit(f"{kind}: verified {report['verified']}, lane bytes {report['lane_bytes']}")
        seconds = report["seconds"]  # the transfer alone (the process's start-up is not the library's)
    if kind != "cli_locate" and target.stat().st_size != ctx["sizes"][name]:
        raise SystemExit(f"{kind}: {target} has {target.stat().st_size} bytes")
    return {"seconds": seconds, **usage}


def bench(sizes: list[int], runs: int, kinds: list[str], tmp: Path) -> dict:
    from client.api import Maestro
    from common.config import Security, Settings
    from control.processes import node_configs, wait_until, write_nodes

    configs = node_configs(tmp, ["peer1", "peer2"], Settings(heartbeat_interval=1.0))
    # both peers share one inode of each file (one copy in the page cache): hard links must be shared
    configs = {n: replace(c, security=Security(allow_hardlinks=True)) for n, c in configs.items()}
    names = {size: f"bench-{size // MiB}MiB.bin" for size in sizes}
    shared1, shared2 = Path(configs["peer1"].shared_dir), Path(configs["peer2"].shared_dir)
    for size, name in names.items():
        _make_file(shared1 / name, size)
        os.link(shared1 / name, shared2 / name)  # one inode: both peers serve the same cached pages
    out = tmp / "out"
    out.mkdir()
    nodes = write_nodes(tmp, configs)
    raw = subprocess.Popen(
        [sys.executable, "-m", "bench.transfer", "_raw-serve", str(shared1)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    results: dict[str, dict[str, list[dict]]] = {name: {k: [] for k in kinds} for name in names.values()}
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_healthy(60)
        maestro = Maestro(configs["maestro"].rest_url, 5.0)

        def located(name: str):
            peers = maestro.locate(name)["peers"]
            return peers if len(peers) == 2 and all(p.get("blake3") for p in peers) else None

        holders = {
            name: wait_until(functools.partial(located, name), 120, what=f"{name} at the Maestro")
            for name in names.values()
        }
        grpc_pids = [
            p.pid for n in ("peer1", "peer2") for p in nodes[n].processes if "peer_app.grpc_server" in " ".join(p.args)
        ]
        ctx = {
            "maestro": configs["maestro"].rest_url,
            "raw_port": int(raw.stdout.readline()) if raw.stdout else 0,
            "holders": holders,
            "grpc_pids": grpc_pids,
            "raw_pid": raw.pid,
            "sizes": {name: size for size, name in names.items()},
        }
        for name in names.values():
            target = out / name
            for _ in range(runs):
                for kind in kinds:
                    _clean(out)
                    results[name][kind].append(_run(kind, name, target, ctx))
            _clean(out)
        server_rss = [peak_rss_kib(pid) for pid in grpc_pids]
    finally:
        raw.terminate()
        raw.wait(10)
        for node in nodes.values():
            node.stop()
    return {
        "sizes": {name: size for size, name in names.items()},
        "runs": runs,
        "results": results,
        "server_rss_kib": server_rss,
        "load": os.getloadavg(),
    }


def report(data: dict) -> str:
    lines = [
        f"median of {data['runs']} run(s) [best], loopback, {os.cpu_count()} CPU(s), "
        f"load {data['load'][0]:.2f} {data['load'][1]:.2f} {data['load'][2]:.2f}"
    ]
    labels = {key: label for key, label, _ in KINDS}
    for name, size in data["sizes"].items():
        results = data["results"][name]

        def secs(kind: str, pick=statistics.median, results=results) -> float:
            return pick([r["seconds"] for r in results[kind]])

        raw = secs("raw")
        lines.append(f"file {size / MiB:.0f} MiB")
        lines.append(
            f"  {'':42s} {'MB/s':>7s} {'[best]':>8s} {'x raw':>6s} {'seconds':>8s}"
            f" {'client CPU-s/GiB':>17s} {'server CPU-s/GiB':>17s} {'client RSS MiB':>15s}"
        )
        for kind in results:
            rows = results[kind]
            rss = max(r["rss_kib"] for r in rows) / 1024
            cpu = statistics.median(r["cpu"] for r in rows) * 1024 * MiB / size
            server_cpu = statistics.median(r["server_cpu"] for r in rows) * 1024 * MiB / size
            if kind == "cli_locate":
                lines.append(
                    f"  {labels[kind]:42s} {'':7s} {'':8s} {'':6s} {secs(kind):8.3f} {'':17s} {'':17s} {rss:15.1f}"
                )
                continue
            lines.append(
                f"  {labels[kind]:42s} {size / secs(kind) / 1e6:7.0f} [{size / secs(kind, min) / 1e6:6.0f}]"
                f" {raw / secs(kind):6.2f} {secs(kind):8.3f} {cpu:17.2f} {server_cpu:17.2f} {rss:15.1f}"
            )
        if "cli_lane2" in results and "cli_locate" in results:
            cli, locate = secs("cli_lane2"), secs("cli_locate")
            ratio = (raw + locate) / cli
            verdict = "met" if ratio >= TARGET else "NOT met"
            lines.append(
                f"  target: CLI download {cli:.3f} s vs (raw {raw:.3f} s + locate {locate:.3f} s) / {TARGET}"
                f" = {(raw + locate) / TARGET:.3f} s -> ratio {ratio:.2f}, {verdict}"
            )
    lines.append(
        "peak RSS of the peers' gRPC processes over all runs: "
        + ", ".join(f"{kib / 1024:.1f} MiB" for kib in data["server_rss_kib"])
        + "; client CPU counts the whole client process (start-up included)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        child(argv)
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.transfer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="512,2048", help="file sizes in MiB, comma-separated (default 512,2048)")
    parser.add_argument("--quick", action="store_true", help="64 MiB, one run, fewer kinds: a smoke test for CI")
    parser.add_argument("--runs", type=int, default=None, help="runs per kind; the median counts (default 3)")
    parser.add_argument("--kinds", default="", help="comma-separated subset of " + ",".join(k for k, _, _ in KINDS))
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    sizes = [64 * MiB] if args.quick else [int(s) * MiB for s in args.sizes.split(",") if s]
    runs = args.runs or (1 if args.quick else 3)
    kinds = [k for k in args.kinds.split(",") if k] or (QUICK_KINDS if args.quick else [k for k, _, _ in KINDS])
    unknown = set(kinds) - {k for k, _, _ in KINDS}
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    if "raw" not in kinds:
        kinds.insert(0, "raw")
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        data = bench(sizes, runs, kinds, Path(tmp))
    print(report(data))
    if args.json:
        print(json.dumps(data))


if __name__ == "__main__":
    main()
