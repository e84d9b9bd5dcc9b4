"""What an idle node costs in memory: the seed network (a Maestro and three peers) brought up.

    python -m bench.footprint [--quick] [--peers 3] [--settle 3]

Brings up a network of --peers peers with the launcher (supervisord, default settings, free
ports), lets it settle, and reports for the Maestro and for each peer the processes it runs
and their PSS and RSS (summed per node; PSS splits pages shared between processes, so the
sum is what the node really adds to the machine). Then it asks each peer a few searches and
locates and each /locate of the Maestro, and measures again ("after use"): a node that looks
small only until its first request is not small. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench.procs import descendants, memory_mib
from common.http import new_session
from control.generate import free_ports, generate
from control.network import Network
from control.topology import load as load_topology


def _cmd(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    return "gunicorn" if "gunicorn" in text else ("grpc_server" if "grpc_server" in text else text[:60])


def node_memory(network: Network) -> dict:
    """node -> {processes, pss_mib, rss_mib, each: [(what, pss)]}."""
    out: dict = {}
    for row in network.status():
        pids = descendants([p.pid for p in row.programs if p.pid])
        rss, pss = memory_mib(pids)
        each = []
        for pid in pids:
            _, p = memory_mib([pid])
            each.append(f"{_cmd(pid)} {p:.1f}")
        out[row.node] = {"processes": len(pids), "pss_mib": round(pss, 1), "rss_mib": round(rss, 1), "each": each}
    return out


def use(network: Network, rounds: int) -> None:
    """A few searches and locates on every peer, and locates on the Maestro."""
    with new_session() as s:
        for _ in range(rounds):
            for peer in network.topology.peers:
                s.get(peer.rest_url + "/search", params={"query": "x"}, timeout=10)
                s.get(peer.rest_url + "/locate", params={"file": "nothing.txt"}, timeout=10)
                s.get(network.topology.maestro.url + "/locate", params={"file": "nothing.txt"}, timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter settle and fewer requests")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--settle", type=float, default=None, help="seconds idle before measuring (3)")
    args = parser.parse_args(argv)
    settle = args.settle if args.settle is not None else (1.0 if args.quick else 3.0)
    report: dict = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        doc = generate(args.peers, free_ports(1 + 2 * args.peers), ring=True)
        path = Path(tmp) / "net.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        network = Network(load_topology(path))
        try:
            network.up(timeout=120)
            time.sleep(settle)  # idle means idle: the first heartbeats and registrations are over
            report["idle"] = node_memory(network)
            use(network, 5 if args.quick else 20)
            time.sleep(settle)
            report["after_use"] = node_memory(network)
        finally:
            network.down()
    for phase in ("idle", "after_use"):
        peers = [v["pss_mib"] for k, v in report[phase].items() if k != "maestro"]
        report[f"{phase}_summary"] = {
            "peer_pss_mib_median": round(statistics.median(peers), 1),
            "maestro_pss_mib": report[phase]["maestro"]["pss_mib"],
        }
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
