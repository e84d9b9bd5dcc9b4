"""Under load and abuse: REST servers, discovery and supervision on a real ring (docs/performance.md, "Under load").

    python -m bench.rest_load [--quick] [--peers 10] [--searches 200] [--worker-classes gevent,gthread] [--only ...]

One ring per REST worker class (gevent, then gthread: the comparison is in one run), each
brought up with the launcher (supervisord, gunicorn and gRPC processes; friends i+1 and i+2;
default settings but `search_timeout` 10 s, so that a caller may give 10 s), then measures,
each against a baseline taken in the same run:

- slowloris: N half-open HTTP connections (headers never finished, one header line every
  few seconds) held against one peer and against the Maestro, while /health is probed:
  probe latency and failures, beside the same probes with no slow client;
- search (caller's budget 3 s, the default) and search_10s (10 s): N flood searches
  (fanout 2, default ttl) from every peer in turn for a file only the peer on the far side
  of the ring holds, first one after another, then all released together: wall time,
  p50/p99, share `complete`, answers silently short (the far file missing while the answer
  does not say `complete: false`), messages per search (requests to /search counted by every
  peer's /metrics) and CPU per search (utime+stime of every process of the network, less
  what it burns idle);
- locate: the same for P2P /locate (404s for a file that exists are false);
- liveness: the Maestro stopped 5 s, then started: the live peers it reports right after;
- storm: the Maestro killed again as soon as it answers /health, up to K times: whether it
  always came back (FATAL on the way), how long each return took, and the fewest live peers
  the Maestro reported right after it came back;
- rps: the Maestro's /locate requests/s (bench.discovery's load, 10 peers x 10 files); and
  each ring's REST memory per node.

Prints JSON. `--quick` keeps the whole run under a minute (CI logs the figures; never a
pass/fail threshold). Every process started here is stopped by `down` (by pid).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from bench.procs import cpu_seconds, descendants, idle_cpu_rate, memory_mib, percentile
from common.http import new_session
from control.generate import free_ports, generate, opposite
from control.network import Network
from control.topology import load as load_topology

ALL_SECTIONS = "slowloris,search,search_10s,locate,liveness,storm,rps"
DEFAULT_BUDGET = 3.0  # seconds: Settings.search_timeout's default, what a caller who says nothing gets


# --- a ring brought up by the launcher ----------------------------------------------------------


@dataclass
class Ring:
    """A running ring seen from outside: names, URLs, the file each peer alone holds."""

    network: Network
    names: list[str]
    urls: dict[str, str]
    maestro_url: str
    shared_by_three: str = "shared-by-three.txt"
    far_file: Callable[[str], str] = lambda owner: f"only-on-{owner}.bin"  # the file only that peer holds
    meta: dict = field(default_factory=dict)

    def far(self, i: int) -> tuple[str, str]:
        """(name of the peer opposite peer i, the file only it holds)."""
        owner = opposite(self.names, i)
        return owner, self.far_file(owner)

    def pids(self) -> list[int]:
        sup = self.network.supervisor
        return descendants([p.pid for p in sup.processes() if p.pid > 0])

    def rest_pids(self) -> list[int]:
        sup = self.network.supervisor
        return descendants([p.pid for p in sup.processes() if p.pid > 0 and p.name.endswith("-rest")])


@contextlib.contextmanager
def ring(tmp: Path, peers: int, settings: dict | None = None) -> Iterator[Ring]:
    """Bring up a ring of peers with the launcher; take it down afterwards."""
    doc = generate(peers, free_ports(1 + 2 * peers), ring=True, settings=settings or None)
    names = [p["name"] for p in doc["peers"]]
    tmp.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        folder = tmp / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"only-on-{name}.bin").write_bytes(name.encode() * 64)
        if i % (peers // 3 or 1) == 0 and i < 3 * (peers // 3 or 1):
            (folder / "shared-by-three.txt").write_bytes(b"three copies\n")
    path = tmp / "ring.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    network = Network(load_topology(path))
    urls = {p.name: p.rest_url for p in network.topology.peers}
    started = time.monotonic()
    try:
        network.up(timeout=180)
        yield Ring(
            network, names, urls, network.topology.maestro.url, meta={"up_s": round(time.monotonic() - started, 1)}
        )
    finally:
        network.down()


# --- slowloris ------------------------------------------------------------------------------


@contextlib.contextmanager
def slow_clients(host: str, port: int, n: int, trickle: float = 2.0) -> Iterator[list[socket.socket]]:
    """n connections that start a request and never finish its headers (one line every trickle s)."""
    socks: list[socket.socket] = []
    stop = threading.Event()
    for _ in range(n):
        with contextlib.suppress(OSError):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
            socks.append(s)

    def trickle_loop() -> None:
        i = 0
        while not stop.wait(trickle):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            i += 1

    thread = threading.Thread(target=trickle_loop, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for s in socks:
            s.close()


def probe_health(url: str, probes: int, timeout: float, interval: float = 0.1) -> dict:
    """GET /health probes times, each on a fresh connection: latencies and failures."""
    latencies, failures = [], 0
    for _ in range(probes):
        t = time.perf_counter()
        try:
            with new_session() as s:
                ok = s.get(url + "/health", timeout=timeout).status_code == 200
        except requests.RequestException:
            ok = False
        elapsed = time.perf_counter() - t
        if ok:
            latencies.append(elapsed)
        else:
            failures += 1
        time.sleep(interval)
    return {
        "probes": probes,
        "failed": failures,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
    }


def bench_slowloris(r: Ring, counts: list[int], probes: int, timeout: float) -> dict:
    """/health of a peer and of the Maestro with 0 (baseline) and then n slow clients held."""
    out: dict = {}
    for node, url in (("peer", r.urls[r.names[0]]), ("maestro", r.maestro_url)):
        host, port = url.split("//")[1].rsplit(":", 1)
        rows = {"0 (baseline)": probe_health(url, probes, timeout)}
        for n in counts:
            with slow_clients(host, int(port), n) as socks:
                time.sleep(0.5)  # let the server take them in
                rows[str(n)] = {**probe_health(url, probes, timeout), "held": len(socks)}
            time.sleep(0.5)
        out[node] = rows
    return out


# --- bursts of searches and locates ----------------------------------------------------------


@dataclass
class Answer:
    latency: float
    status: int
    found: bool
    complete: bool | None
    messages: int | None


def _run(
    jobs: list[Callable[[requests.Session], Answer]], concurrent: bool, sessions: list[requests.Session]
) -> tuple[list[Answer], float]:
    """Run jobs one after another or all released at once; return answers and wall seconds."""
    answers: list[Answer | None] = [None] * len(jobs)
    if not concurrent:
        t = time.perf_counter()
        for i, job in enumerate(jobs):
            answers[i] = job(sessions[i])
        return answers, time.perf_counter() - t  # type: ignore[return-value]
    barrier = threading.Barrier(len(jobs) + 1)

    def worker(i: int) -> None:
        barrier.wait()
        answers[i] = job_safe(jobs[i], sessions[i])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(jobs))]
    for th in threads:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    return answers, time.perf_counter() - t  # type: ignore[return-value]


def job_safe(job: Callable[[requests.Session], Answer], session: requests.Session) -> Answer:
    try:
        return job(session)
    except requests.RequestException:
        return Answer(float("nan"), 0, False, None, None)


def search_job(
    url: str, far_peer: str, query: str, timeout: float, budget: float | None = None
) -> Callable[[requests.Session], Answer]:
    params: dict[str, str | float] = {"query": query, "fanout": 2, **({"budget": budget} if budget else {})}

    def run(s: requests.Session) -> Answer:
        t = time.perf_counter()
        resp = s.get(url + "/search", params=params, timeout=timeout)
        latency = time.perf_counter() - t
        body = resp.json()
        found = any(isinstance(x, dict) and x.get("peer") == far_peer for x in body.get("results", []))
        return Answer(latency, resp.status_code, found, body.get("complete"), body.get("messages"))

    return run


def locate_job(
    url: str, far_peer: str, name: str, timeout: float, budget: float | None = None
) -> Callable[[requests.Session], Answer]:
    params: dict[str, str | float] = {"file": name, **({"budget": budget} if budget else {})}

    def run(s: requests.Session) -> Answer:
        t = time.perf_counter()
        resp = s.get(url + "/locate", params=params, timeout=timeout)
        latency = time.perf_counter() - t
        body = resp.json()
        found = resp.status_code == 200 and any(p.get("name") == far_peer for p in body.get("peers", []))
        return Answer(latency, resp.status_code, found, body.get("complete"), None)

    return run


def search_requests(r: Ring) -> int | None:
    """Requests to /search every peer answered so far (from each peer's /metrics), None if one does not say."""
    pattern = re.compile(r'^p2p_http_requests_total\{[^}]*endpoint="/search"[^}]*\}\s+([0-9.e+]+)', re.M)
    total = 0.0
    with new_session() as s:
        for url in r.urls.values():
            try:
                text = s.get(url + "/metrics", timeout=30).text
            except requests.RequestException:
                return None
            total += sum(float(v) for v in pattern.findall(text))
    return int(total)


def settled_search_requests(r: Ring, timeout: float = 30.0) -> int | None:
    """search_requests() once hops still under way after a burst have finished (two equal reads)."""
    deadline = time.monotonic() + timeout
    last = search_requests(r)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = search_requests(r)
        if now == last:
            return now
        last = now
    return last


def summarise(answers: list[Answer], wall: float, cpu: float, requests_seen: int | None) -> dict:
    n = len(answers)
    lat = [a.latency for a in answers if a.latency == a.latency]
    complete = [a for a in answers if a.complete is True]
    silent_short = [a for a in answers if not a.found and a.complete is not False]
    out = {
        "n": n,
        "wall_s": round(wall, 2),
        "p50_ms": round(percentile(lat, 50) * 1000, 1),
        "p99_ms": round(percentile(lat, 99) * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "found": sum(a.found for a in answers),
        "complete_true": len(complete),
        "complete_false": sum(a.complete is False for a in answers),
        "complete_missing": sum(a.complete is None for a in answers),
        "silently_short": len(silent_short),
        "status": {str(k): sum(a.status == k for a in answers) for k in sorted({a.status for a in answers})},
        "cpu_ms_per_request": round(cpu / n * 1000, 1),
    }
    if requests_seen is not None:
        out["messages_per_search"] = round(requests_seen / n - 1, 2)  # the origin's own request is not a message
    reported = [a.messages for a in answers if a.messages is not None]
    if reported:
        out["messages_reported_median"] = statistics.median(reported)
    return out


def bench_burst(r: Ring, kind: str, n: int, timeout: float, budget: float | None = None) -> dict:
    """n searches (or locates) one after another, then the same n released together.

    budget: the deadline each caller gives (the `budget` parameter); None: the peers' default.
    """
    jobs = []
    for k in range(n):
        i = k % len(r.names)
        far_peer, name = r.far(i)
        url = r.urls[r.names[i]]
        job = search_job if kind == "search" else locate_job
        jobs.append(job(url, far_peer, name, timeout, budget))
    sessions = [new_session() for _ in range(n)]
    for k, s in enumerate(sessions):  # one warm keep-alive connection per client
        s.get(r.urls[r.names[k % len(r.names)]] + "/health", timeout=10)
    result: dict = {}
    for mode, concurrent in (("sequential", False), ("concurrent", True)):
        before_requests = settled_search_requests(r) if kind == "search" else None
        pids = r.pids()
        idle = idle_cpu_rate(pids)  # heartbeats, gRPC polling: what the network burns doing nothing
        cpu0 = cpu_seconds(pids)
        answers, wall = _run(jobs, concurrent, sessions)
        cpu = cpu_seconds(pids) - cpu0 - idle * wall
        after_requests = settled_search_requests(r) if kind == "search" else None  # hops that outlived the burst too
        seen = None if before_requests is None or after_requests is None else after_requests - before_requests
        result[mode] = {**summarise(answers, wall, cpu, seen), "idle_cpu_ms_per_s": round(idle * 1000, 1)}
    result["caller_budget_s"] = budget or "default"
    result["ratio_concurrent_to_sequential_wall"] = round(
        result["concurrent"]["wall_s"] / result["sequential"]["wall_s"], 2
    )
    for s in sessions:
        s.close()
    return result


# --- the Maestro killed as soon as it answers --------------------------------------------------


def alive_count(url: str) -> int | None:
    try:
        with new_session() as s:
            return sum(p["alive"] for p in s.get(url + "/peers", timeout=2).json()["peers"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def maestro_locate(url: str, name: str) -> int | None:
    try:
        with new_session() as s:
            return s.get(url + "/locate", params={"file": name}, timeout=2).status_code
    except requests.RequestException:
        return None


def bench_storm(r: Ring, kills: int, wait_back: float) -> dict:
    """Kill the Maestro as soon as it answers, kills times; watch it come back, and the peers' liveness."""
    sup = r.network.supervisor
    rows: list[dict[str, object]] = []
    never_back_after = None
    min_alive: int | None = None
    locate_404 = 0
    fatal_seen = 0
    for k in range(1, kills + 1):
        t0 = time.monotonic()
        back, was_fatal = None, False
        while time.monotonic() - t0 < wait_back:
            with contextlib.suppress(requests.RequestException), new_session() as s:
                if s.get(r.maestro_url + "/health", timeout=0.5).status_code == 200:
                    back = time.monotonic() - t0
                    break
            was_fatal |= any(p.fatal for p in sup.group("maestro"))
            time.sleep(0.02)
        fatal_seen += was_fatal
        if back is None:
            never_back_after = k - 1
            rows.append({"kill": k, "back_s": None, "state": ",".join(sorted({p.state for p in sup.group("maestro")}))})
            break
        alive = alive_count(r.maestro_url)
        status = maestro_locate(r.maestro_url, r.shared_by_three)
        locate_404 += status == 404
        if alive is not None:
            min_alive = alive if min_alive is None else min(min_alive, alive)
        rows.append(
            {
                "kill": k,
                "back_s": round(back, 2),
                "fatal_before": was_fatal,
                "alive_after": alive,
                "locate_status": status,
            }
        )
        r.network.kill("maestro")
    t0 = time.monotonic()
    final_back = None
    while never_back_after is None and time.monotonic() - t0 < wait_back:
        with contextlib.suppress(requests.RequestException), new_session() as s:
            if s.get(r.maestro_url + "/health", timeout=0.5).status_code == 200:
                final_back = time.monotonic() - t0
                break
        time.sleep(0.05)
    return {
        "kills_requested": kills,
        "never_back_after_kills": never_back_after,
        "times_fatal_on_the_way": fatal_seen,
        "rows": rows,
        "min_alive_after_return": min_alive,
        "peers": len(r.names),
        "maestro_locate_404_for_file_on_3_live_peers": locate_404,
        "back_after_storm_s": None if final_back is None else round(final_back, 2),
        "state_after_storm": ",".join(sorted({p.state for p in sup.group("maestro")})),
        "alive_after_storm": alive_count(r.maestro_url),
    }


def bench_restart_liveness(r: Ring, outage: float) -> dict:
    """Stop the Maestro for `outage` seconds, start it: alive peers as seen right after."""
    r.network.stop("maestro")
    time.sleep(outage)
    sup = r.network.supervisor
    sup.start_group("maestro", wait=False)
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < 10:
        alive = alive_count(r.maestro_url)
        if alive is not None:
            samples.append(alive)
            if len(samples) >= 5:
                break
        time.sleep(0.1)
    status = maestro_locate(r.maestro_url, r.shared_by_three)
    return {
        "outage_s": outage,
        "alive_samples_after_start": samples,
        "peers": len(r.names),
        "maestro_locate_status_file_on_3_live_peers": status,
    }


# --- main -----------------------------------------------------------------------------------


def run_ring(tmp: Path, args: argparse.Namespace, settings: dict, only: set[str]) -> dict:
    """Every section on one ring brought up with these settings."""
    out: dict = {}
    n = args.searches or (40 if args.quick else 200)
    slow = [int(x) for x in (args.slow or ("8,50" if args.quick else "8,200")).split(",")]
    with ring(tmp, args.peers, settings) as r:
        rss, pss = memory_mib(r.pids())
        rest_rss, rest_pss = memory_mib(r.rest_pids())
        out["ring"] = {
            **r.meta,
            "settings": settings,
            "peers": args.peers,
            "processes": len(r.pids()),
            "rss_mib": round(rss),
            "pss_mib": round(pss),
            "rest_pss_mib_per_node": round(rest_pss / (args.peers + 1), 1),
            "rest_rss_mib_per_node": round(rest_rss / (args.peers + 1), 1),
        }
        sections: list[tuple[str, Callable[[], dict]]] = [
            ("slowloris", lambda: bench_slowloris(r, slow, probes=10, timeout=2.0)),
            ("search", lambda: bench_burst(r, "search", n, args.timeout, budget=DEFAULT_BUDGET)),
            ("search_10s", lambda: bench_burst(r, "search", n, args.timeout, budget=10.0)),
            ("locate", lambda: bench_burst(r, "locate", n, args.timeout)),
            ("liveness", lambda: bench_restart_liveness(r, outage=5.0)),
            ("storm", lambda: bench_storm(r, args.kills or 10, wait_back=30.0)),
        ]
        for name, run in sections:
            if name in only:
                out[name] = run()
                print(json.dumps({settings.get("rest_worker_class", "default"): {name: out[name]}}), flush=True)
    return out


def maestro_locate_rps(tmp: Path, worker_class: str, seconds: float) -> dict:
    """The Maestro's /locate requests/s (bench.discovery's load, 10 peers x 10 files) with this worker class."""
    from dataclasses import replace

    from bench.discovery import bench_locate
    from common.config import Settings

    settings = replace(Settings(), rest_worker_class=worker_class)
    return bench_locate(tmp, 10, 10, seconds, settings, "python", baseline=False)["maestro"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rest_load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="gevent only, smaller counts, no storm (< 1 min)")
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--searches", type=int, default=None, help="searches (and locates) per burst (200)")
    parser.add_argument("--slow", default=None, help="slow client counts, e.g. 8,200")
    parser.add_argument("--kills", type=int, default=None, help="Maestro kills in the storm (10)")
    parser.add_argument("--only", default=None, help=ALL_SECTIONS)
    parser.add_argument(
        "--worker-classes", default=None, help="REST worker classes, each on its own ring (gevent,gthread)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request")
    parser.add_argument("--default-settings", action="store_true", help="leave the worker class to the code's default")
    args = parser.parse_args(argv)
    only = set((args.only or ("slowloris,search,locate" if args.quick else ALL_SECTIONS)).split(","))
    classes = (args.worker_classes or ("gevent" if args.quick else "gevent,gthread")).split(",")
    report: dict = {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        for wc in classes:
            # search_timeout 10 s lets a caller give 10 s (section search_10s); the others pass 3 s, the default
            settings = {} if args.default_settings else {"rest_worker_class": wc, "search_timeout": 10.0}
            key = "default" if args.default_settings else wc
            report[key] = run_ring(Path(tmp) / f"ring-{wc}", args, settings, only)
            if "rps" in only:
                report[key]["maestro_locate"] = maestro_locate_rps(Path(tmp) / f"rps-{wc}", wc, 5.0)
                print(json.dumps({key: {"maestro_locate": report[key]["maestro_locate"]}}), flush=True)
            if args.default_settings:
                break
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        main()
