"""A firewall that drops the fast lane: the download falls back to the gRPC stream and completes.

A real peer gRPC process runs in a network namespace of its own (prefix p2p13-, subnet
10.213.0.0/16) whose nftables input chain drops every TCP packet except those to its gRPC
port, as a host firewall that knows only the configured ports would. The lane's OS-chosen
port is then silently unreachable: the client's connect times out and the same holder's
gRPC stream serves the bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from client.download import download
from common.config import NodeConfig, Settings, write_config
from tests.support import ROOT, MiB, leftovers, sha, wait_until

PREFIX, SUBNET = "p2p13", "10.213"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=20)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command"
    if _run("ip", "netns", "list", check=False).returncode != 0:
        return "`ip netns` does not work here"
    return None


@pytest.fixture
def namespace():
    """A namespace p2p13-N with a veth to this one: (name, address inside, address outside)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    used = _run("ip", "-o", "addr", "show").stdout + _run("ip", "netns", "list").stdout
    n = next(i for i in range(1, 255) if f" {SUBNET}.{i}." not in used and f"{PREFIX}-{i}" not in used)
    name, host_if, ns_if = f"{PREFIX}-{n}", f"{PREFIX}h{n}", f"{PREFIX}s{n}"
    inside, outside = f"{SUBNET}.{n}.2", f"{SUBNET}.{n}.1"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{outside}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{inside}/24", "dev", ns_if)
        _run("ip", "-n", name, "link", "set", ns_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name, inside, outside
    finally:
        _run("ip", "netns", "del", name, check=False)  # the veth pair goes with it


def test_a_firewalled_lane_falls_back_to_the_grpc_stream(namespace, tmp_path):
    name, inside, _ = namespace
    shared = tmp_path / "shared"
    shared.mkdir()
    data = os.urandom(4 * MiB + 1)
    (shared / "f.bin").write_bytes(data)
    grpc_port = 50051
    config = NodeConfig(
        role="peer",
        name="walled",
        host=inside,
        rest_port=8080,
        grpc_port=grpc_port,
        shared_dir=str(shared),
        run_dir=str(tmp_path / "run"),
        maestro_url=f"http://{inside}:1",  # no Maestro: registration fails fast and is retried quietly
        settings=Settings(heartbeat_interval=60.0),
    )
    write_config(config, tmp_path / "walled.json")
    _run(
        "ip", "netns", "exec", name, "nft", "add table inet p2p13; "
        "add chain inet p2p13 input { type filter hook input priority 0; policy accept; }; "
        f"add rule inet p2p13 input tcp dport != {grpc_port} drop",
    )  # fmt: skip
    with open(tmp_path / "walled.log", "wb") as log:
        argv = [sys.executable, "-m", "peer_app.grpc_server", "--config", str(tmp_path / "walled.json")]
        server = subprocess.Popen(["ip", "netns", "exec", name, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        holder = [{"name": "walled", "grpc_address": f"{inside}:{grpc_port}"}]
        wait_until(
            lambda: download("f.bin", tmp_path / "probe.bin", holder, lanes=False, connect_timeout=1.0),
            30,
            what="the walled peer's gRPC server",
        )
        started = time.monotonic()
        result = download("f.bin", tmp_path / "f.bin", holder, lane_connect_timeout=1.0, piece_size=MiB)
        assert (tmp_path / "f.bin").read_bytes() == data and result.sha256 == sha(data)
        assert result.lane_bytes == {} and "timed out" in result.lane_off["walled"]
        assert result.sources == {"walled": len(data)} and result.verified == "blake3"
        assert time.monotonic() - started < 10  # one connect timeout per worker, then the stream
        assert leftovers(tmp_path) == []
    finally:
        server.terminate()
        server.wait(10)
