"""How a node runs: its command lines (rendered into supervisord programs by render.py) and, for
tests and benchmarks, a way to start them directly as child processes without supervisord.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from common.config import CONFIG_ENV, Friend, NodeConfig, Settings, write_config
from common.http import new_session
from common.tls import node_files
from control.generate import free_ports

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # every program runs from here (supervisord's directory)

GRACEFUL_TIMEOUT = 3  # seconds gunicorn gives in-flight requests on stop; supervisor waits longer
KEEP_ALIVE = 1  # seconds an idle keep-alive connection is held; a stopping worker waits it out


def _tls_arguments(config: NodeConfig) -> list[str]:
    """gunicorn's certificate and key for a node of a TLS network (none otherwise)."""
    if not config.security.tls:
        return []
    files = node_files(config.security.tls_dir, config.name)
    return ["--certfile", str(files.cert), "--keyfile", str(files.key)]


def node_programs(config: NodeConfig, config_path: str) -> dict[str, list[str]]:
    """Program name -> argv for every process of the node (run with cwd = project root)."""
    s = config.settings
    app = "maestro_app:create_app()" if config.role == "maestro" else "peer_app:create_app()"
    # gevent (the default): each connection and each hop a peer waits on is a greenlet, so slow
    # clients cannot take every worker thread (gunicorn's docs advise an async worker for slow
    # clients and long outbound calls). gthread stays available, for comparison.
    if s.rest_worker_class == "gevent":
        workers = ["--worker-class", "gevent", "--worker-connections", str(s.rest_connections)]
    else:
        workers = ["--worker-class", "gthread", "--threads", str(s.rest_threads)]
    rest = [
        sys.executable,
        "-m",
        "gunicorn",
        *workers,
        "--workers",
        str(s.maestro_rest_workers if config.role == "maestro" else s.rest_workers),
        "--bind",
        config.rest_bind,
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        "--timeout",
        "30",
        "--keep-alive",
        str(KEEP_ALIVE),
        "--no-control-socket",
        "--config",
        "python:common.gunicorn_conf",
        *_tls_arguments(config),
        app,
    ]
    if config.role == "maestro":
        return {"maestro": rest}
    grpc = [sys.executable, "-m", "peer_app.grpc_server", "--config", config_path]
    return {f"{config.name}-rest": rest, f"{config.name}-grpc": grpc}


RESTARTER = "p2p-restarter"  # supervisord event listener (not a node): brings FATAL programs back


def restarter_command() -> list[str]:
    """argv of the event listener that restarts FATAL programs with backoff (control/restarter.py)."""
    return [sys.executable, "-m", "control.restarter"]


def node_environment(config_path: str) -> dict[str, str]:
    """Environment every process of a node needs besides the inherited one."""
    return {CONFIG_ENV: config_path, "PYTHONUNBUFFERED": "1"}


# --- nodes as plain child processes (tests, benchmarks) -------------------------------------


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 - a server that is not up yet raises anything
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


@dataclass
class Process:
    """A child process in its own session, stopped by pid (and its group)."""

    args: list[str]
    env: dict
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def started(self) -> subprocess.Popen:
        if self.popen is None:
            raise RuntimeError(f"{self.args[:3]} was never started")
        return self.popen

    @property
    def pid(self) -> int:
        return self.started.pid

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.started.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@dataclass
class Node:
    config: NodeConfig
    config_path: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.config.rest_url

    def start(self) -> Node:
        env = {**os.environ, **node_environment(str(self.config_path))}
        self.processes = [
            Process(argv, env, Path(self.config.run_dir) / f"{program}.log").start()
            for program, argv in node_programs(self.config, str(self.config_path)).items()
        ]
        return self

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until the node's /health answers 200, from this node's own REST process.

        Ports are drawn free a moment before the node binds them: another network on this
        machine (a benchmark restarting its nodes on their ports, say) may take one meanwhile.
        Then its server answers here while this node cannot bind, and everything sent to this
        node reaches that one until it stops: refused connections later on, far from the cause.
        """

        def healthy():
            for p in self.processes:
                if p.started.poll() is not None:
                    raise AssertionError(f"{self.config.name} exited:\n{p.tail()}")
            with new_session() as session:
                if session.get(self.url + "/health", timeout=1).status_code != 200:
                    return False
            if holds_listener(self.processes[0].pid, self.config.rest_port) is False:
                raise AssertionError(
                    f"port {self.config.rest_port} answers, but another process than {self.config.name} holds it"
                )
            return True

        wait_until(healthy, timeout, what=f"{self.config.name} /health")


def holds_listener(pid: int, port: int) -> bool | None:
    """Whether process pid holds a socket listening on TCP port in this network namespace; None
    where /proc does not say (not Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def node_configs(
    tmp: Path, peer_names: list[str], settings: Settings | None = None, host: str = "127.0.0.1"
) -> dict[str, NodeConfig]:
    """Configs for a Maestro and peers on free ports; friends in a ring (i+1 primary, i+2 backup)."""
    settings = settings or Settings(heartbeat_interval=0.5, request_timeout=1.0)
    run = tmp / "run"
    maestro = NodeConfig(
        role="maestro", name="maestro", host=host, rest_port=free_ports(1, host)[0], run_dir=str(run), settings=settings
    )
    maestro = replace(maestro, maestro_url=maestro.rest_url)
    peers = {
        n: NodeConfig(
            role="peer",
            name=n,
            host=host,
            rest_port=free_ports(1, host)[0],
            grpc_port=free_ports(1, host)[0],
            shared_dir=str(tmp / "data" / n),
            run_dir=str(run),
            maestro_url=maestro.rest_url,
            settings=settings,
        )
        for n in peer_names
    }
    names = list(peers)
    for i, n in enumerate(names):
        friends: dict[str, Friend] = {}
        for role, step in (("primary", 1), ("backup", 2)):
            other = names[(i + step) % len(names)]
            if other != n and other not in [f.name for f in friends.values()]:
                friends[role] = Friend(other, peers[other].rest_url)
        peers[n] = replace(peers[n], friends=friends)
        Path(peers[n].shared_dir).mkdir(parents=True, exist_ok=True)
    return {"maestro": maestro, **peers}


def write_nodes(tmp: Path, configs: dict[str, NodeConfig]) -> dict[str, Node]:
    nodes = {}
    for name, config in configs.items():
        path = tmp / "run" / f"{name}.json"
        write_config(config, path)
        nodes[name] = Node(config, path)
    return nodes
