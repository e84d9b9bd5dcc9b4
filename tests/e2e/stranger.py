"""A stranger on the network: a process in a network namespace of its own, reaching the nodes
from a non-loopback address, as an outsider on the LAN would.

Root only (`Stranger.available()` says why not). `Stranger(prefix, subnet)` makes:
  - a namespace `<prefix>-<n>` (e.g. p2p8-3),
  - a veth pair whose root-namespace end has `<subnet>.<n>.1/24` (the network under test
    listens on `stranger.host_address`) and whose namespace end has `<subnet>.<n>.2/24`
    (the stranger's own address, `stranger.address`, where its listeners live),
  - one agent process inside the namespace (tests/e2e/stranger_agent.py) that runs commands.

Nodes in the root namespace that talk to `host_address` do so from `host_address` itself, so
their own traffic is not loopback either. `close()` (or the context manager) stops the agent
and deletes the namespace, which removes the veth pair with it. Each issue uses its own prefix
and subnet (p2p8 / 10.208 for the attack suite).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


class Stranger:
    """A network namespace with a veth to the root namespace and an agent process inside."""

    def __init__(self, prefix: str = "p2p8", subnet: str = "10.208") -> None:
        self.prefix = prefix
        self.subnet = subnet
        self.index = self._free_index()
        self.namespace = f"{prefix}-{self.index}"
        self._host_if = f"{prefix}h{self.index}"[:15]
        self._ns_if = f"{prefix}s{self.index}"[:15]
        self.host_address = f"{subnet}.{self.index}.1"
        self.address = f"{subnet}.{self.index}.2"
        self.agent: subprocess.Popen | None = None
        try:
            self._create()
            self._start_agent()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> str | None:
        """None when this machine can make namespaces, else the reason it cannot."""
        if os.geteuid() != 0:
            return "needs root to create network namespaces (ip netns)"
        if shutil.which("ip") is None:
            return "needs the `ip` command (iproute2)"
        probe = _ip("netns", "list", check=False)
        if probe.returncode != 0:
            return f"`ip netns` does not work here: {probe.stderr.strip()[:120]}"
        return None

    def _free_index(self) -> int:
        """The first /24 of the subnet that no interface and no namespace of ours uses yet."""
        used_addresses = _ip("-o", "addr", "show").stdout
        namespaces = _ip("netns", "list").stdout
        for n in range(1, 255):
            taken_ns = any(line.split()[0] == f"{self.prefix}-{n}" for line in namespaces.splitlines() if line)
            if f" {self.subnet}.{n}." not in used_addresses and not taken_ns:
                return n
        raise RuntimeError(f"no free /24 left in {self.subnet}.0.0/16")

    def _create(self) -> None:
        ns = self.namespace
        _ip("netns", "add", ns)
        _ip("link", "add", self._host_if, "type", "veth", "peer", "name", self._ns_if)
        _ip("link", "set", self._ns_if, "netns", ns)
        _ip("addr", "add", f"{self.host_address}/24", "dev", self._host_if)
        _ip("link", "set", self._host_if, "up")
        _ip("-n", ns, "addr", "add", f"{self.address}/24", "dev", self._ns_if)
        _ip("-n", ns, "link", "set", self._ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def _start_agent(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(proxy, None)
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "tests.e2e.stranger_agent"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def do(self, op: str, **fields) -> dict:
        """Run one command in the namespace and return its answer (see stranger_agent)."""
        assert self.agent is not None and self.agent.stdin and self.agent.stdout
        self.agent.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.agent.stdin.flush()
        line = self.agent.stdout.readline()
        if not line:
            raise RuntimeError(f"the stranger's agent exited (code {self.agent.poll()})")
        return json.loads(line)

    def http(self, method: str, url: str, **fields) -> dict:
        """An HTTP request from the stranger's address: {status, body} or {error, detail}."""
        return self.do("http", method=method, url=url, **fields)

    def run(self, *argv: str, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
        """Run a program inside the namespace (e.g. the p2pnet client) and wait for it."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            cwd=kwargs.pop("cwd", ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def close(self) -> None:
        """Stop the agent and remove the namespace (the veth pair goes with it)."""
        if self.agent is not None and self.agent.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                stdin = self.agent.stdin
                assert stdin is not None  # the agent is started with a pipe
                stdin.write(json.dumps({"op": "quit"}) + "\n")
                stdin.flush()
            try:
                self.agent.wait(5)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(5)
        _ip("netns", "del", self.namespace, check=False)
        _ip("link", "del", self._host_if, check=False)  # normally gone with the namespace

    def __enter__(self) -> Stranger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def leftovers(prefix: str = "p2p8") -> list[str]:
    """Namespaces of this prefix still present (a test run that was killed leaves them)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.startswith(f"{prefix}-")]
