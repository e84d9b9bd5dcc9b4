"""Discovery benchmark: flood search across a 30-peer ring, and Maestro /locate throughput.

    python -m bench.discovery [--quick] [--peers 30] [--queries 60] [--seconds 5]

(a) A ring of real peers (gunicorn + gRPC processes, friends i+1 and i+2); from peer1, search
    for a file held by the peer on the far side with fanout 2 and ttl 10: p50/p99 latency,
    peers that handled each query (from `visited`; never the same peer twice) and messages
    per query. Also the network's start time and memory (sum of RSS of every process).
(b) The Maestro's /locate requests/s under concurrent keep-alive load, with a directory of
    10 peers x 10 files and of 1,000 peers x 100 files (every file name held by one peer):
    the two should be about equal. wrk when installed, else a Python multi-process client.
Everything binds 127.0.0.1 on free ports; every process started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import requests
import yaml

from bench.procs import descendants, memory_mib, percentile
from common.config import Settings, http_url
from common.http import new_session
from control.generate import free_ports, generate
from control.network import Network
from control.processes import Process, node_configs, wait_until, write_nodes
from control.topology import load as load_topology
from maestro_app.directory import Directory, FileEntry

RING_SETTINGS = Settings(heartbeat_interval=2.0, request_timeout=2.0, rest_workers=1, rest_threads=8)


def tree_memory_mib(pids: list[int]) -> tuple[float, float, int]:
    """Sum of RSS and of PSS (MiB) of pids and all their descendants, and how many processes."""
    tree = descendants(pids)
    rss, pss = memory_mib(tree)
    return rss, pss, len(tree)


# (a) flood search across a ring ---------------------------------------------------------------


def bench_ring(tmp: Path, peers: int, queries: int, settings: Settings) -> dict:
    """Bring a ring up with the launcher (supervisord, real processes), then time far-side searches."""
    ring_settings = {
        k: getattr(settings, k) for k in ("heartbeat_interval", "request_timeout", "rest_workers", "rest_threads")
    }
    doc = generate(peers, free_ports(1 + 2 * peers), ring=True, settings=ring_settings)
    names = [p["name"] for p in doc["peers"]]
    far = names[peers // 2]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ring.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp / "data" / far).mkdir(parents=True)
    (tmp / "data" / far / "far-side.bin").write_bytes(b"far away" * 100)
    network = Network(load_topology(path))
    try:
        t0 = time.monotonic()
        network.up(timeout=180)  # returns once every node is RUNNING, healthy and registered
        ready_seconds = time.monotonic() - t0
        pids = [p.pid for row in network.status() for p in row.programs if p.pid]
        rss, pss, processes = tree_memory_mib(pids)
        origin = http_url(doc["peers"][0]["host"], doc["peers"][0]["rest_port"])
        session = new_session()
        params: dict[str, str | int] = {"query": "far-side", "fanout": 2, "ttl": 10}
        session.get(origin + "/search", params=params, timeout=10)  # warm the connections
        latencies, handled, messages, found, repeats = [], [], [], 0, 0
        for _ in range(queries):
            t = time.perf_counter()
            body = session.get(origin + "/search", params=params, timeout=10).json()
            latencies.append((time.perf_counter() - t) * 1000)
            visited = body["visited"]
            repeats += len(visited) - len(set(visited))
            handled.append(len(visited))
            messages.append(body["messages"])
            found += any(r["peer"] == far for r in body["results"])
        return {
            "peers": peers,
            "processes": processes,
            "up_all_registered_s": round(ready_seconds, 1),
            "rss_total_mib": round(rss),
            "pss_total_mib": round(pss),
            "rss_per_peer_mib": round(rss / (peers + 1), 1),
            "queries": queries,
            "found_far_side": found,
            "peers_seen_twice": repeats,
            "latency_ms_p50": round(statistics.median(latencies), 1),
            "latency_ms_p99": round(percentile(latencies, 99), 1),
            "handled_per_query": {"min": min(handled), "median": statistics.median(handled), "max": max(handled)},
            "messages_per_query": {"min": min(messages), "median": statistics.median(messages), "max": max(messages)},
        }
    finally:
        network.down()


# (b) Maestro /locate throughput ---------------------------------------------------------------


def fill_directory(db_path: str, peers: int, files: int) -> list[str]:
    """Register peers x files straight into the Maestro's SQLite; return the file names."""
    directory = Directory(db_path, default_interval=3600.0, expire_after_beats=3.0)
    names: list[str] = []
    for i in range(peers):
        entries = [FileEntry(f"file-{i:04d}-{j:03d}.txt", 1000 + j, 0.0, f"{i * files + j:064x}") for j in range(files)]
        directory.register(
            f"peer{i:04d}",
            f"http://127.0.0.1:{20000 + i}",
            f"127.0.0.1:{30000 + i}",
            entries,
            heartbeat_interval=3600.0,
        )
        names.extend(e.name for e in entries)
    return names


WRK_SCRIPT = """
local names = {%s}
request = function()
  return wrk.format("GET", "/locate?file=" .. names[math.random(#names)])
end
"""


def run_wrk(url: str, names: list[str], seconds: float, connections: int, tmp: Path) -> dict:
    sample = names[:: max(1, len(names) // 1000)][:1000]
    script = tmp / "locate.lua"
    script.write_text(WRK_SCRIPT % ",".join(json.dumps(n) for n in sample))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no Requests/sec:\n{out}")
    rps = float(found.group(1))
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "tool": "wrk",
        "requests_per_s": round(rps),
        "latency_p50": p50 and p50.group(1),
        "latency_p99": p99 and p99.group(1),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def _client(args) -> tuple[int, int]:
    host, port, names, seconds, seed = args
    import random

    rng = random.Random(seed)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("GET", "/locate?file=" + rng.choice(names))
        resp = conn.getresponse()
        resp.read()
        done += 1
        errors += resp.status != 200
    conn.close()
    return done, errors


def run_python_load(url: str, names: list[str], seconds: float, clients: int) -> dict:
    host, port = url.split("//")[1].split(":")
    sample = names[:: max(1, len(names) // 1000)][:1000]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        t = time.monotonic()
        results = pool.map(_client, [(host, int(port), sample, seconds, i) for i in range(clients)])
        elapsed = time.monotonic() - t
    done = sum(r[0] for r in results)
    return {
        "tool": f"python x{clients}",
        "requests_per_s": round(done / max(elapsed, seconds)),
        "non_2xx": sum(r[1] for r in results),
    }


def load(url: str, names: list[str], seconds: float, tool: str, tmp: Path) -> dict:
    if tool == "wrk":
        return run_wrk(url, names, seconds, 64, tmp)
    return run_python_load(url, names, seconds, 4)


def bench_locate(
    tmp: Path, peers: int, files: int, seconds: float, settings: Settings, tool: str, baseline: bool
) -> dict:
    """/locate requests/s of the Maestro, and of the minimal baseline app on the same file."""
    configs = node_configs(tmp, [], settings)
    maestro_config = configs["maestro"]
    t = time.monotonic()
    names = fill_directory(maestro_config.db_path, peers, files)
    fill_s = time.monotonic() - t
    node = write_nodes(tmp, {"maestro": maestro_config})["maestro"]
    result = {"directory": f"{peers} peers x {files} files", "fill_s": round(fill_s, 1)}
    node.start()
    try:
        node.wait_healthy(timeout=30)
        check = requests.get(node.url + "/locate", params={"file": names[-1]}, timeout=5)
        assert check.status_code == 200, check.text
        load(node.url, names, 1.0, tool, tmp)  # warm-up: connections, caches, lazy imports
        result["maestro"] = load(node.url, names, seconds, tool, tmp)
    finally:
        node.stop()
    if baseline:
        argv = [
            a if a != "maestro_app:create_app()" else "bench.locate_baseline:create_app()"
            for a in node.processes[0].args
        ]
        env = {**node.processes[0].env, "BENCH_DB": maestro_config.db_path}
        floor = Process(argv, env, tmp / "baseline.log").start()
        try:
            wait_until(lambda: requests.get(node.url + "/health", timeout=1).ok, 30, what="baseline up")
            load(node.url, names, 1.0, tool, tmp)
            result["baseline_flask_sqlite"] = load(node.url, names, seconds, tool, tmp)
        finally:
            floor.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.discovery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer queries and shorter load (< 60 s)")
    parser.add_argument("--peers", type=int, default=30)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="load duration per /locate run")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--only", choices=["ring", "locate"], default=None)
    parser.add_argument("--maestro-workers", type=int, default=2)
    parser.add_argument("--maestro-threads", type=int, default=4)
    args = parser.parse_args(argv)
    queries = args.queries or (20 if args.quick else 100)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    tool = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "python")
    report: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "ring"):
            report["ring_search"] = bench_ring(tmp / "ring", args.peers, queries, RING_SETTINGS)
            report["ring_settings"] = {
                "rest_workers": RING_SETTINGS.rest_workers,
                "rest_threads": RING_SETTINGS.rest_threads,
            }
            print(json.dumps(report["ring_search"], indent=2), flush=True)
        if args.only in (None, "locate"):
            settings = replace(Settings(), maestro_rest_workers=args.maestro_workers, rest_threads=args.maestro_threads)
            report["locate"] = [
                bench_locate(tmp / f"locate{p}", p, f, seconds, settings, tool, baseline=not args.quick)
                for p, f in ((10, 10), (1000, 100))
            ]
            report["maestro_settings"] = {"workers": args.maestro_workers, "threads": args.maestro_threads}
            print(json.dumps(report["locate"], indent=2), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
