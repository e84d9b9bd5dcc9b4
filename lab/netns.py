"""Several hosts on one machine: network namespaces joined by a bridge (root only).

A `Lab` makes one namespace per host plus a "switch" namespace holding the bridge, so
nothing is added to the machine's own network: every address, route and qdisc lives in
namespaces the lab created and deletes again (also when a test fails, and the next lab
removes what a killed run left behind). Each host has its own loopback and ports, like a
separate machine; the hosts share this machine's filesystem, as machines sharing a home do.

    with Lab(["a", "b", "c"]) as lab:
        lab.run("a", [sys.executable, "launcher.py", "up", "topology.yaml"])
        lab.partition("b")          # silent drops both ways, like a cut cable
        lab.heal("b")

Neighbour (ARP) entries are permanent, so a partition is silent drops and timeouts, as
between machines on a routed network, not a quick "no route to host".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from control.supervisor import pid_alive

PREFIX = "p2p10"  # namespace names start with the owning issue's prefix
SUBNET = "10.210"  # the issue's /16: hosts get 10.210.<lab>.<i>


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the test suite as root to include this test)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _tc(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} in {ns}: {proc.stderr.strip() or proc.returncode}")
    return proc


def namespaces() -> list[str]:
    """Names of the network namespaces on this machine."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes living in namespace ns."""
    out = _ip("netns", "pids", ns, check=False).stdout
    return sorted(int(p) for p in out.split() if p.isdigit())


def kill_all(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM pids, then SIGKILL whatever is left after grace seconds."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left by labs whose creating process is gone (a killed test run)."""
    removed = []
    for ns in namespaces():
        parts = ns.split("-")
        if len(parts) < 3 or parts[0] != prefix or not parts[1].isdigit() or pid_alive(int(parts[1])):
            continue
        kill_all(ns_pids(ns))
        _ip("netns", "del", ns, check=False)
        removed.append(ns)
    return removed


@dataclass(frozen=True)
class Host:
    """One namespace playing one machine."""

    name: str  # short name: a, b, c
    ns: str  # namespace name
    addr: str  # its address on the bridge
    mac: str


class Lab:
    """Hosts in network namespaces on one bridge; a context manager that always cleans up."""

    def __init__(
        self,
        names: Sequence[str] = ("a", "b", "c"),
        *,
        lab_id: int | None = None,
        prefix: str = PREFIX,
        subnet: str = SUBNET,
    ) -> None:
        self.prefix = prefix
        self.tag = f"{prefix}-{os.getpid()}-{lab_id if lab_id is not None else id(self) % 10000}"
        octet = (lab_id if lab_id is not None else os.getpid()) % 250 + 1
        self.switch = f"{self.tag}-sw"
        self.hosts = {
            n: Host(n, f"{self.tag}-{n}", f"{subnet}.{octet}.{i + 1}", f"02:10:{octet:02x}:00:00:{i + 1:02x}")
            for i, n in enumerate(names)
        }
        self.made: list[str] = []
        self.partitioned: set[str] = set()
        self.caps: dict[str, str] = {}

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)

    def create(self) -> None:
        remove_stale(self.prefix)
        self._add_ns(self.switch)
        _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("link", "set", "br0", "up", ns=self.switch)
        for host in self.hosts.values():
            self._add_ns(host.ns)
            port = f"v-{host.name}"[:15]
            _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.ns, ns=self.switch)
            _ip("link", "set", port, "master", "br0", ns=self.switch)
            _ip("link", "set", port, "up", ns=self.switch)
            _ip("link", "set", "eth0", "address", host.mac, ns=host.ns)
            _ip("addr", "add", f"{host.addr}/24", "dev", "eth0", ns=host.ns)
            _ip("link", "set", "eth0", "up", ns=host.ns)
        for host in self.hosts.values():
            for other in self.hosts.values():
                if other is not host:
                    _ip(
                        "neigh",
                        "replace",
                        other.addr,
                        "lladdr",
                        other.mac,
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                        ns=host.ns,
                    )

    def destroy(self) -> None:
        """Stop every process left in the lab's namespaces, then delete them."""
        for ns in self.made:
            kill_all(ns_pids(ns))
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)
        self.made.clear()

    # --- running things on a host --------------------------------------------------------------

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """argv run inside host's namespace."""
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """Run argv on host and wait for it (output captured as text)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(host, argv), timeout=timeout, check=False, **kwargs)

    def popen(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start argv on host in the background."""
        return subprocess.Popen(self.argv(host, argv), **kwargs)

    def pids(self, host: str) -> list[int]:
        """Processes running on host right now."""
        return ns_pids(self.hosts[host].ns)

    # --- breaking the network ----------------------------------------------------------------

    def partition(self, host: str) -> None:
        """Cut host off: every frame to or from it is dropped silently (interfaces stay up)."""
        _tc(self.switch, "qdisc", "replace", "dev", f"v-{host}"[:15], "root", "blackhole")
        _tc(self.hosts[host].ns, "qdisc", "replace", "dev", "eth0", "root", "blackhole")
        self.partitioned.add(host)

    def heal(self, host: str) -> None:
        """Undo partition(host) (its cap, if any, holds again)."""
        _tc(self.switch, "qdisc", "del", "dev", f"v-{host}"[:15], "root", check=False)
        _tc(self.hosts[host].ns, "qdisc", "del", "dev", "eth0", "root", check=False)
        self.partitioned.discard(host)
        if host in self.caps:
            self.cap(host, self.caps[host])

    def cap(self, host: str, rate: str | None) -> None:
        """Cap what host sends, as a slow uplink would: a token bucket of rate ("160mbit"); None lifts the cap."""
        ns = self.hosts[host].ns
        if rate is None:
            self.caps.pop(host, None)
            if host not in self.partitioned:
                _tc(ns, "qdisc", "del", "dev", "eth0", "root", check=False)
            return
        self.caps[host] = rate
        if host not in self.partitioned:
            tbf = ("tbf", "rate", rate, "burst", "256kb", "latency", "200ms")
            _tc(ns, "qdisc", "replace", "dev", "eth0", "root", *tbf)
