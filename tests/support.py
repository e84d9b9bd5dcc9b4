"""Helpers for tests: the project root, free ports, polling, and nodes run as child processes.

Nodes, processes and polling live in control/processes.py (benchmarks use them too); they are
re-exported here so tests import one module.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from client.partial import PART_MARK
from control.generate import free_ports
from control.processes import PROJECT_ROOT, Node, Process, node_configs, wait_until, write_nodes
from control.supervisor import pid_alive
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


def flip(path: Path, offset: int = 0) -> None:
    """Flip one bit of path in place and put its mtime back: size, mtime and inode stay (the ctime moves)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@contextmanager
def recording_server(status: int, body: bytes) -> Iterator[tuple[str, list[tuple[str, str, str | None, bytes]]]]:
    """A local HTTP server answering every request with (status, JSON body): yields (url, calls).

    calls holds (method, path, Authorization, request body) for each request, in order.
    """
    calls: list[tuple[str, str, str | None, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append((self.command, self.path, self.headers.get("Authorization"), sent))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's names

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


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


class SmallDisk:
    """A tmpfs of a few MiB mounted at path (root only): a real disk a test can fill to the last block.

    Its owner's pid is written beside the mount point (path + OWNER), so a mount left behind by
    a test run that was killed before its teardown is found and removed by the next run
    (sweep_small_disks, at session start), and never one a running test still uses.
    """

    FILLER = ".filler"
    OWNER = ".small-disk-owner"

    def __init__(self, path: Path, size: str = "8m") -> None:
        self.path = Path(path)
        self.size = size
        self.mounted = False

    @property
    def owner_file(self) -> Path:
        return self.path.with_name(self.path.name + self.OWNER)

    def mount(self) -> str | None:
        """Mount it; the reason it cannot be mounted here, or None."""
        if os.geteuid() != 0:
            return "mounting a small tmpfs needs root"
        self.path.mkdir(parents=True, exist_ok=True)
        self.owner_file.write_text(str(os.getpid()))
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            self.owner_file.unlink(missing_ok=True)
            return f"cannot mount a tmpfs: {proc.stderr.strip()}"
        self.mounted = True
        atexit.register(self.unmount)  # an interrupted run (a test's teardown never ran) still unmounts
        return None

    def unmount(self) -> None:
        """Detach it (lazily: a process still holding a file there does not keep it mounted)."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
            self.mounted = False
            self.owner_file.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Write a filler file until the disk is full (or only `leave` bytes are free)."""
        with open(self.path / self.FILLER, "ab", buffering=0) as fh:
            for block in (1024 * 1024, 64 * 1024, 4096, 512, 1):
                try:
                    while self.free_bytes() - block >= leave:
                        fh.write(bytes(block))
                except OSError:  # ENOSPC: the next, smaller block
                    continue

    def free(self) -> None:
        """Remove the filler."""
        (self.path / self.FILLER).unlink(missing_ok=True)


def small_disk(path: Path, size: str = "8m") -> Iterator[SmallDisk]:
    """A pytest fixture's body: a mounted SmallDisk, unmounted however the test ends; skips where it cannot mount."""
    disk = SmallDisk(path, size)
    reason = disk.mount()
    if reason is not None:
        pytest.skip(reason)
    try:
        yield disk
    finally:
        disk.unmount()


def sweep_small_disks() -> list[str]:
    """Unmount the SmallDisks whose owner process is gone (a run killed before its teardown); returns them."""
    swept: list[str] = []
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return swept
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or fields[2] != "tmpfs":
            continue
        point = fields[1].replace("\\040", " ")
        owner = Path(point + SmallDisk.OWNER)
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            continue
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        owner.unlink(missing_ok=True)
        swept.append(point)
    return swept


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

    Each URL answers /membership as the peer it is mapped to (with a membership proof when a guard
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
        if route == "/membership":
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
