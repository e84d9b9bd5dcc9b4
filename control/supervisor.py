"""Drive one network's own supervisord over XML-RPC on its unix socket.

Never a system-wide supervisord: every call goes to the socket named in the network's run
folder. (`supervisor` below is the installed library: this module is `control.supervisor`.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.states import RUNNING_STATES as ACTIVE_STATES
from supervisor.states import STOPPED_STATES, ProcessStates, SupervisorStates
from supervisor.xmlrpc import SupervisorTransport

from common.config import CONFIG_ENV
from control.errors import LauncherError, NotRunning
from control.private import NotPrivate, check_private, make_private
from control.render import RunLayout

# supervisor.states: ACTIVE_STATES (the library's RUNNING_STATES) are RUNNING, BACKOFF and
# STARTING, a program that is or is about to be up; STOPPED_STATES are STOPPED, EXITED,
# FATAL and UNKNOWN.


@dataclass(frozen=True)
class ProcInfo:
    """One program as supervisord sees it."""

    node: str
    name: str
    state: str  # supervisord's statename, for people
    pid: int
    start: int
    now: int
    description: str
    code: int = ProcessStates.UNKNOWN  # supervisor.states.ProcessStates, for code

    @property
    def running(self) -> bool:
        return self.code == ProcessStates.RUNNING

    @property
    def fatal(self) -> bool:
        return self.code == ProcessStates.FATAL

    @property
    def crashing(self) -> bool:
        """Died before it stayed up startsecs: retrying (BACKOFF) or given up on for now (FATAL)."""
        return self.code in (ProcessStates.BACKOFF, ProcessStates.FATAL)

    @property
    def active(self) -> bool:
        """Up or on its way up (STARTING, BACKOFF): supervisord will not start it again."""
        return self.code in ACTIVE_STATES

    @property
    def down(self) -> bool:
        return self.code in STOPPED_STATES

    @property
    def uptime(self) -> float | None:
        return float(self.now - self.start) if self.running and self.start else None

    @classmethod
    def from_xmlrpc(cls, info: dict) -> ProcInfo:
        return cls(
            node=info["group"],
            name=info["name"],
            state=info["statename"],
            pid=info["pid"],
            start=info["start"],
            now=info["now"],
            description=info.get("description", ""),
            code=info["state"],
        )


def pid_alive(pid: int) -> bool:
    """True while pid is a live process (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphans(layout: RunLayout) -> list[int]:
    """Pids of processes started for this network that outlived their supervisord (kill -9 of it).

    They are found by the CONFIG_ENV (P2P_CONFIG) in their environment, which points into the run folder.
    """
    marker = f"{CONFIG_ENV}={layout.run_dir / 'config'}{os.sep}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(var.startswith(marker) for var in environ.split(b"\0")) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def kill_pids(pids: list[int], sig: int) -> None:
    """Send sig to each pid's process group (or the pid alone when it leads none)."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            continue


class Supervisor:
    """A client of the supervisord that serves layout.socket."""

    def __init__(self, layout: RunLayout, timeout: float = 30.0) -> None:
        self.layout = layout
        self.timeout = timeout

    def _proxy(self) -> xmlrpc.client.ServerProxy:
        transport = SupervisorTransport(None, None, self.layout.serverurl)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def _call(self, method: str, *args):
        check_private(self.layout.socket.parent)  # never talk to a socket someone else could have put there
        proxy = self._proxy()
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.timeout)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise NotRunning(
                f"supervisord of {self.layout.run_dir} is not running ({self.layout.socket}: {exc.strerror})"
            ) from None
        except xmlrpc.client.Fault as exc:
            raise LauncherError(f"supervisord refused {method}{args!r}: {exc.faultString}") from None
        except OSError as exc:
            raise NotRunning(f"cannot reach supervisord at {self.layout.socket}: {exc}") from None
        finally:
            socket.setdefaulttimeout(old)

    # --- the daemon itself ---------------------------------------------------------------

    def is_running(self) -> bool:
        """True when supervisord answers on the socket and is in its RUNNING state."""
        if not self.layout.socket.exists():
            return False
        try:
            return self._call("getState")["statecode"] == SupervisorStates.RUNNING
        except NotPrivate:
            raise
        except LauncherError:
            return False

    def pidfile_pid(self) -> int:
        """The pid in the pidfile when it is still this network's supervisord, else 0."""
        try:
            pid = int(self.layout.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return 0
        # a stale pidfile may name a pid that some other process got since
        return pid if os.fsencode(str(self.layout.conf)) in cmdline and pid_alive(pid) else 0

    def start_daemon(self, python: str, cwd: Path, deadline: float) -> None:
        """Start supervisord on the rendered config; return once it answers on its socket."""
        self.layout.logs_dir.mkdir(parents=True, exist_ok=True)
        make_private(self.layout.socket.parent, tighten=True)
        proc = subprocess.run(
            [python, "-m", "supervisor.supervisord", "-c", str(self.layout.conf)],
            cwd=cwd,
            check=False,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
            raise LauncherError(f"supervisord did not start (exit {proc.returncode}): {lines[-1]}", lines[:-1][-5:])
        while time.monotonic() < deadline:
            if self.is_running():
                return
            time.sleep(0.05)
        raise LauncherError(f"supervisord did not answer on {self.layout.socket} in time; see {self.layout.logfile}")

    def pid(self) -> int:
        return int(self._call("getPID"))

    def shutdown(self) -> None:
        self._call("shutdown")

    def update(self) -> tuple[list[str], list[str], list[str]]:
        """Reread the config and apply it like `supervisorctl update`; return added/changed/removed."""
        added, changed, removed = self._call("reloadConfig")[0]
        self.stop_groups(removed + changed)
        for group in removed + changed:
            self._call("removeProcessGroup", group)
        for group in changed + added:
            self._call("addProcessGroup", group)
        return added, changed, removed

    # --- processes -----------------------------------------------------------------------

    def processes(self) -> list[ProcInfo]:
        return [ProcInfo.from_xmlrpc(i) for i in self._call("getAllProcessInfo")]

    def group(self, node: str) -> list[ProcInfo]:
        return [p for p in self.processes() if p.node == node]

    def start_group(self, node: str, wait: bool = False) -> None:
        # processes already running are skipped by supervisord itself
        self._call("startProcessGroup", node, wait)

    def stop_group(self, node: str, wait: bool = True) -> None:
        self._call("stopProcessGroup", node, wait)

    def stop_groups(self, nodes: list[str], timeout: float = 30.0) -> None:
        """Stop several nodes at once (not one after the other); return when all are down."""
        for node in nodes:
            self.stop_group(node, wait=False)
        deadline = time.monotonic() + timeout
        while any(not p.down for p in self.processes() if p.node in nodes):
            if time.monotonic() >= deadline:
                raise LauncherError(f"{', '.join(nodes)}: still not stopped after {timeout:g}s")
            time.sleep(0.05)

    def stop_all(self) -> None:
        self._call("stopAllProcesses", True)

    def kill_group(self, node: str) -> list[int]:
        """SIGKILL every process of node, workers included: each program's process group."""
        # supervisord puts each child in a process group of its own (setpgrp)
        pids = [proc.pid for proc in self.group(node) if proc.pid > 0]
        kill_pids(pids, signal.SIGKILL)
        return pids
