"""`launcher.py status` as data: one row per node, what is wrong, the exit code, the table.

report() turns the rows a Network gathered (control/network.py NodeStatus: supervisord's
programs, the health probes) into a StatusReport without touching a process or the network,
so every decision here is tested on made-up rows. The launcher only prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import NotRunning
from control.network import Network, NodeStatus
from control.topology import Topology

CRASH_TAIL_LINES = 6  # log lines `status` shows for a node in a crash loop
HEADER = ["NODE", "STATE", "PID", "UPTIME", "HEALTHY", "REGISTERED", "FILES", "URL", "PROGRAMS"]


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def urls_table(topology: Topology) -> str:
    """Where each node answers (what `up` prints), with WHERE when nodes span hosts."""
    where = (lambda n: []) if topology.local is None else (lambda n: ["here" if topology.is_local(n) else "remote"])
    rows = [["NODE", "REST", "GRPC", *(["WHERE"] if topology.local is not None else [])]]
    rows.append(["maestro", topology.maestro.url, "-", *where("maestro")])
    rows += [[p.name, p.rest_url, p.grpc_address, *where(p.name)] for p in topology.peers]
    return table(rows)


def uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def pids_text(row: NodeStatus, programs: list[str]) -> str:
    """The pids in the PROGRAMS column's order ("-" for a program without one)."""
    by_name = {p.name: p.pid for p in row.programs}
    return ",".join(str(by_name.get(name) or "-") for name in programs) if row.programs else "-"


def local_problems(row: NodeStatus, programs: list[str]) -> list[str]:
    """Why a node of this machine is not well, in words ("peer2: peer2-grpc STOPPED")."""
    states = {p.name: p.state for p in row.programs}
    down = [f"{name} {states.get(name, 'missing')}" for name in programs if states.get(name) != "RUNNING"]
    if down:
        return [f"{row.node}: {', '.join(down)}"]
    return health_problems(row)


def health_problems(row: NodeStatus) -> list[str]:
    """Why a node whose programs run (or one of another host, as seen over the network) is not well."""
    h = row.health
    where = "REMOTE, " if row.remote else ""
    if h is None or not h.rest:
        return [f"{row.node}: {where or 'RUNNING but '}GET /health does not answer at {row.url}"]
    if h.grpc is False:
        return [f"{row.node}: {where or 'RUNNING but '}its gRPC health check does not answer"]
    if h.registered is False:
        return [f"{row.node}: {where}healthy but not registered (alive) at the Maestro"]
    return []


@dataclass(frozen=True)
class StatusReport:
    """What `status` says about a network: its rows, its problems and its exit code."""

    topology: Path  # the topology file
    socket: Path  # where its supervisord answers
    running: bool  # supervisord answers (or no node runs on this machine)
    nodes: list[dict[str, Any]]  # one row per node, as `status --json` prints them
    pids: list[str]  # the PID column, in the rows' order
    problems: list[str] = field(default_factory=list)
    crashing: list[NodeStatus] = field(default_factory=list)  # nodes in a crash loop

    @property
    def ok(self) -> bool:
        return self.running and not self.problems

    @property
    def exit_code(self) -> int:
        """0 all well; 3 the network is not running here; 1 some node is not well."""
        return 0 if self.ok else NotRunning.exit_code if not self.running else 1

    def why(self, typed: str) -> str:
        """The line that says why the exit code is not 0 ("" when it is); typed: the topology as given."""
        if not self.running:
            return (
                f"the network of {self.topology} is not running (no supervisord answers on "
                f"{self.socket}); start it with: python launcher.py up {typed}"
            )
        if self.problems:
            return f"not all is well: {'; '.join(self.problems)}; see `python launcher.py logs NODE`"
        return ""

    def as_json(self) -> dict[str, Any]:
        return {
            "topology": str(self.topology),
            "running": self.running,
            "ok": self.ok,
            "problems": self.problems,
            "nodes": self.nodes,
        }

    def table(self) -> str:
        rows = [HEADER]
        for node, pids in zip(self.nodes, self.pids, strict=True):
            rows.append(
                [
                    node["node"],
                    node["state"],
                    pids,
                    uptime_text(node["uptime"]),
                    _yes_no(node["healthy"]),
                    _yes_no(node["registered"]),
                    "-" if node["files"] is None else str(node["files"]),
                    node["url"],
                    ",".join(p["name"] for p in node["programs"]) or "-",
                ]
            )
        return table(rows)


def report(
    rows: Sequence[NodeStatus],
    programs_of: Callable[[str], list[str]],
    *,
    running: bool,
    every: bool,
    topology: Path,
    socket: Path,
) -> StatusReport:
    """The report of these rows; every: remote nodes count for the exit code too."""
    nodes: list[dict[str, Any]] = []
    pids: list[str] = []
    problems: list[str] = []
    for row in rows:
        programs = programs_of(row.node)
        if row.remote:
            row_problems = health_problems(row) if every else []
        else:
            row_problems = local_problems(row, programs) if running else []
        problems += row_problems
        h = row.health
        nodes.append(
            {
                "node": row.node,
                "state": row.state,
                "uptime": None if row.uptime is None else round(row.uptime, 1),
                "healthy": h.healthy if h else None,
                "registered": h.registered if h else None,
                "files": h.files if h else None,
                "url": row.url,
                "programs": [
                    {"name": name, "state": p.state if p else "DOWN", "pid": p.pid if p and p.pid else None}
                    for name in programs
                    for p in [next((q for q in row.programs if q.name == name), None)]
                ],
                "ok": running and not row_problems,
            }
        )
        pids.append(pids_text(row, programs))
    crashing = [row for row in rows if any(p.crashing for p in row.programs)]
    return StatusReport(topology, socket, running, nodes, pids, problems, crashing)


def network_report(net: Network, *, every: bool) -> StatusReport:
    """Probe net now (supervisord, REST and gRPC health, the Maestro's directory) and report."""
    has_local = any(net.topology.is_local(n) for n in net.topology.node_names)
    running = net.supervisor.is_running() if has_local else True
    return report(
        net.status(),
        net.rendered.programs_of,
        running=running,
        every=every,
        topology=net.topology.path,
        socket=net.rendered.layout.socket,
    )


def crash_lines(net: Network, status: StatusReport, lines: int = CRASH_TAIL_LINES) -> list[str]:
    """For each node in a crash loop: its programs' states, then the last lines of its logs."""
    out = []
    for row in status.crashing:  # supervisord retries, then p2p-restarter
        states = " ".join(f"{p.name}:{p.state}" for p in row.programs)
        out.append(f"{row.node}: crash loop ({states}); last lines of its logs:")
        out += net.log_tail(row.node, lines)
    return out
