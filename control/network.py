"""The launcher's verbs over one topology: up, down, status, start/stop/restart/kill, logs."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from control import health, logs, render
from control.errors import LauncherError, NodesDown, NotRunning, RemoteNode, TopologyError, UnknownNode
from control.processes import PROJECT_ROOT
from control.render import STOPWAITSECS
from control.supervisor import ProcInfo, Supervisor, kill_pids, orphans, pid_alive
from control.topology import MAESTRO, Topology, port_in_use, ports_in_use, unbindable, unusable_shared_dirs

LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class NodeStatus:
    """One row of `status`."""

    node: str
    programs: tuple[ProcInfo, ...]
    health: health.NodeHealth | None
    url: str
    remote: bool = False  # runs on another host: probed over the network, no processes here

    @property
    def state(self) -> str:
        if self.remote:
            return "REMOTE"
        if not self.programs:
            return "DOWN"
        states = {p.state for p in self.programs}
        if len(states) == 1:
            return states.pop()
        return " ".join(f"{p.name.removeprefix(self.node + '-')}:{p.state}" for p in self.programs) or "-"

    @property
    def uptime(self) -> float | None:
        times = [p.uptime for p in self.programs]
        return None if not times or None in times else min(times)  # type: ignore[type-var]


class Network:
    """One topology's network as this machine sees it: its local nodes run here, the others are probed."""

    def __init__(
        self,
        topology: Topology,
        *,
        project_root: Path = PROJECT_ROOT,
        python: str = sys.executable,
        echo: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.topology = topology
        self.project_root = project_root
        self.python = python
        self.echo = echo
        self.rendered = render.render(topology, project_root)
        self.supervisor = Supervisor(self.rendered.layout)

    # --- helpers ---------------------------------------------------------------------------

    def check_node(self, node: str, verb: str | None = None) -> str:
        """node, if the topology has it (and, for a verb, if it runs on this machine)."""
        if node not in self.topology.node_names:
            raise UnknownNode(f"unknown node {node!r}: the topology has {', '.join(self.topology.node_names)}")
        if verb is not None and not self.topology.is_local(node):
            host = self.topology.host_of(node)
            raise RemoteNode(f"{node} runs on {host}, not on this machine: run `launcher.py {verb} {node}` on {host}")
        return node

    def write(self) -> set[str]:
        """Write configs and supervisord.conf; return the nodes whose JSON config changed."""
        changed, warning = render.write(self.rendered)
        if warning:
            self.echo(f"warning: {warning}")
        by_path = {
            render_path: name
            for name in self.topology.local_names
            for render_path in [self.rendered.layout.config_path(name)]
        }
        return {by_path[p] for p in changed if p in by_path}

    def require_running(self) -> None:
        if not self.supervisor.is_running():
            raise NotRunning(
                f"the network of {self.topology.path} is not running: run `launcher.py up {self.topology.path}`"
            )

    def log_paths(self, node: str) -> list[Path]:
        return [self.rendered.layout.log_path(p) for p in self.rendered.programs_of(node)]

    def log_tail(self, node: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        out = []
        for path in self.log_paths(node):
            out.append(f"  --- {path} (last {lines} lines)")
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, 2)
                    fh.seek(max(0, fh.tell() - 64 * 1024))
                    tail = fh.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log yet)"]
            out += [f"  {line}" for line in tail]
        return out

    def _refuse_a_silent_supervisord(self, advice: str) -> None:
        """LauncherError when this network's pidfile names a live supervisord that does not answer."""
        stale = self.supervisor.pidfile_pid()
        if stale and pid_alive(stale):
            layout = self.rendered.layout
            raise LauncherError(
                f"a supervisord (pid {stale}) holds {layout.pidfile} but does not answer on {layout.socket}; {advice}"
            )

    def _fatal_nodes(self) -> set[str]:
        return {p.node for p in self.supervisor.processes() if p.fatal}

    def _running_nodes(self) -> set[str]:
        procs = self.supervisor.processes()
        return {p.node for p in procs} - {p.node for p in procs if not p.running}

    def _wait_ready(self, nodes: list[str], timeout: float, what: str) -> None:
        """Wait until each node is RUNNING in supervisord and healthy (and registered, for peers)."""
        deadline = time.monotonic() + timeout
        pending = health.wait_until_ready(
            self.topology, nodes, deadline, lost=self._fatal_nodes, settled=self._running_nodes
        )
        if pending:
            names = [n for n in self.topology.node_names if n in pending]
            procs = self.supervisor.processes()
            details = []
            for n in names:
                states = " ".join(f"{p.name}:{p.state}" for p in procs if p.node == n)
                details.append(f"{n}: not up after `{what}` ({states}); last lines of its logs:")
                details += self.log_tail(n)
            elapsed = timeout - (deadline - time.monotonic())
            raise NodesDown(
                f"{len(names)} node(s) did not come up after {elapsed:.1f}s (timeout {timeout:g}s): {', '.join(names)}",
                details,
            )

    # --- verbs ------------------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> None:
        """Start supervisord and every local node (idempotent); return when every local node is ready.

        Remote nodes are never started nor port-checked here. A Maestro on another host that does
        not answer yet is a warning: the peers start and keep trying to register.
        """
        sup = self.supervisor
        local = self.topology.local_names
        running_before = sup.is_running()
        busy_nodes: set[str] = set()
        if running_before:
            busy_nodes = {p.node for p in sup.processes() if p.active}
        problems = unbindable(self.topology)
        if problems:  # an address of another machine: nothing else is worth checking
            raise TopologyError(str(self.topology.path), problems)
        problems = ports_in_use(self.topology, [n for n in local if n not in busy_nodes])
        problems += unusable_shared_dirs(self.topology)
        if problems:
            raise TopologyError(str(self.topology.path), problems)
        changed_nodes = self.write()
        if running_before:
            added, changed, removed = sup.update()
            for what, groups in (("added", added), ("changed", changed), ("removed", removed)):
                if groups:
                    self.echo(f"supervisord: {what} {', '.join(groups)}")
            restart = (changed_nodes & busy_nodes) - set(changed)
            if restart:
                self.echo(f"config changed, restarting: {', '.join(sorted(restart))}")
                sup.stop_groups(sorted(restart))
            for node in local:
                sup.start_group(node, wait=False)
        else:
            self._refuse_a_silent_supervisord("stop it first")
            self.echo(f"starting supervisord ({self.rendered.layout.conf})")
            sup.start_daemon(self.python, self.project_root, time.monotonic() + 15)
        self._wait_ready(local, timeout, "up")
        if not self.topology.is_local(MAESTRO) and not health.rest_healthy(health.maestro_contact_url(self.topology)):
            self.echo(
                f"warning: the Maestro at {self.topology.maestro.url} does not answer yet; "
                "the peers here keep trying to register"
            )

    def down(self, timeout: float = 30.0) -> list[int]:
        """Stop every local node and supervisord; return once no pid is left and no port is bound."""
        sup = self.supervisor
        local = self.topology.local_names
        deadline = time.monotonic() + timeout
        pids: list[int] = []
        if sup.is_running():
            pids = [p.pid for p in sup.processes() if p.pid > 0]
            pids.append(sup.pid())
            sup.stop_all()
            sup.shutdown()
        else:
            self._refuse_a_silent_supervisord("cannot stop it cleanly")
            pids = orphans(self.rendered.layout)
            if pids:  # its supervisord died (kill -9): stop what it left behind
                self.echo(f"supervisord is gone; stopping {len(pids)} process(es) it left: {', '.join(map(str, pids))}")
                kill_pids(pids, signal.SIGTERM)
                grace = time.monotonic() + STOPWAITSECS
                while any(pid_alive(p) for p in pids) and time.monotonic() < grace:
                    time.sleep(0.05)
                kill_pids([p for p in pids if pid_alive(p)], signal.SIGKILL)
            else:
                held = [f"{key} ({h}:{p})" for key, h, p in self.topology.ports(local) if port_in_use(h, p)]
                if held:
                    raise LauncherError(f"the network is not running, yet other processes hold {', '.join(held)}")
                return []
        left: list[int] = []
        bound: list[str] = []
        while time.monotonic() < deadline:
            left = [p for p in pids if pid_alive(p)]
            bound = [f"{h}:{p}" for _, h, p in self.topology.ports(local) if port_in_use(h, p)]
            if not left and not bound:
                return pids
            time.sleep(0.05)
        raise LauncherError(f"down: still alive after {timeout:g}s: pids {left or '-'}, ports {bound or '-'}")

    def status(self) -> list[NodeStatus]:
        """One row per node, remote ones too; works (showing no processes) when supervisord is down."""
        local = self.topology.local_names
        procs = self.supervisor.processes() if local and self.supervisor.is_running() else []
        probed = health.probe(self.topology, with_files=True)
        return [
            NodeStatus(
                node=node,
                programs=tuple(p for p in procs if p.node == node),
                health=probed.get(node),
                url=self.topology.url_of(node),
                remote=node not in local,
            )
            for node in self.topology.node_names
        ]

    def start(self, node: str, timeout: float = 30.0, verb: str = "start") -> None:
        self.check_node(node, verb)
        self.require_running()
        self.supervisor.start_group(node, wait=False)
        self._wait_ready([node], timeout, "start")

    def stop(self, node: str, verb: str = "stop") -> None:
        self.check_node(node, verb)
        self.require_running()
        self.supervisor.stop_group(node)

    def restart(self, node: str, timeout: float = 30.0) -> None:
        self.stop(node, "restart")
        self.start(node, timeout, "restart")

    def kill(self, node: str) -> list[int]:
        self.check_node(node, "kill")
        self.require_running()
        killed = self.supervisor.kill_group(node)
        if not killed:
            raise LauncherError(f"{node}: no running process to kill")
        return killed

    def log_sources(self, node: str | None = None) -> list[logs.LogSource]:
        """Each program's log (of node, or of every node), then supervisord's events about those programs."""
        nodes = (
            [self.check_node(node, "logs")]
            if node
            else [n for n in self.topology.node_names if self.topology.is_local(n)]
        )
        programs = [p for n in nodes for p in self.rendered.programs_of(n)]
        layout = self.rendered.layout
        sources = [logs.LogSource(p, layout.log_path(p)) for p in programs]
        return [*sources, logs.LogSource("supervisord", layout.logfile, logs.supervisord_events(programs))]

    def follow_logs(
        self, node: str | None, follow: bool, lines: int = 50, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[str]:
        """The last lines of the logs merged in time order, then (follow) new lines as they come."""
        sources = self.log_sources(node)
        past, offsets = logs.history(sources, lines)
        yield from past
        if follow:
            yield from logs.follow(sources, offsets, stop)
