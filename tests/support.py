"""Helpers for tests: the project root, free ports, polling, and nodes run as child processes.

Nodes, processes and polling live in control/processes.py (benchmarks use them too); they are
re-exported here so tests import one module.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from client.partial import PART_MARK
from control.generate import free_ports
from control.processes import PROJECT_ROOT, Node, Process, node_configs, wait_until, write_nodes
from peer_app.storage import TMP_PREFIX

ROOT: Path = PROJECT_ROOT

MiB = 1024 * 1024

__all__ = [
    "ROOT",
    "Clock",
    "MiB",
    "Node",
    "Process",
    "Terminal",
    "free_port",
    "get_json",
    "leftovers",
    "metric_value",
    "node_configs",
    "sha",
    "wait_until",
    "write_nodes",
]


class Clock:
    """A clock a test moves by hand (`clock.now += 5`): pass it as `clock=`, and `clock.sleep` as `sleep=`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the ephemeral range and never one of the seed ports 9000-9006."""
    return free_ports(1, host)[0]


def get_json(url: str, timeout: float = 5.0, **kwargs) -> tuple[int, dict]:
    resp = requests.get(url, timeout=timeout, **kwargs)
    return resp.status_code, resp.json()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary (upload) or partial (download) files left in a folder."""
    return sorted(p.name for p in folder.iterdir() if TMP_PREFIX in p.name or PART_MARK in p.name)


def metric_value(text: str, name: str, **labels) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


class Silence:
    """A gRPC request stream that sends nothing until its gate opens (an idle client)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def stream(self):
        self.gate.wait(60)
        return
        yield


class FakePeers:
    """A transport (peer_app.membership.Transport) for in-process apps: peers at URLs that answer.

    Each URL answers /info as the peer it is mapped to (with a membership proof when a guard
    of the network is given), and /search with `search_answer` (an empty result by default).
    Every call is kept in `calls` as (url, route, params).
    """

    def __init__(self, peers: dict[str, str], guard=None, search_answer: dict | None = None) -> None:
        self.peers = peers
        self.guard = guard
        self.search_answer = search_answer or {"results": [], "visited": [], "messages": 0}
        self.calls: list[tuple[str, str, dict]] = []

    def __call__(self, url: str, route: str, params: dict, timeout: float) -> dict:
        from common.errors import Unavailable

        self.calls.append((url, route, params))
        name = self.peers.get(url)
        if name is None:
            raise Unavailable(f"cannot reach {url}")
        if route == "/info":
            proof = self.guard.proof(name, url, params["challenge"]) if self.guard else None
            return {"name": name, "rest_url": url, "grpc_address": "127.0.0.1:1", "proof": proof}
        return self.search_answer


class Terminal:
    """The client on a pseudo-terminal of 100x30, as in a person's shell; `screen` is all it wrote."""

    def __init__(self, maestro: str, *args: str) -> None:
        leader, follower = os.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peer_app.client", "--maestro", maestro, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        os.close(follower)
        self.leader = leader
        self.screen = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.leader, 4096)
            except OSError:  # the terminal closes when the client exits
                break
            if not data:
                break
            self.screen += data

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        os.close(self.leader)
        return code

    def text(self) -> str:
        return self.screen.decode(errors="replace")
