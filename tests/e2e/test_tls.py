"""security.tls: true and read: members, end to end: the launcher's CA and certificates, https and
gRPC over TLS, every read closed to strangers.

The network comes up healthy (the launcher probes it over TLS, as the operator), curl-like clients
verify against `.run/<topology>/tls/ca.pem`, and the CLI, run from the network's folder, finds the
CA and the operator's token by itself. A client that does not trust the CA gets nowhere; one
without a token reads nothing but /health.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests
import yaml

from common.security import operator_token, read_secret
from common.tls import ca_certificate
from tests.launcher_support import ROOT, launcher, ring_topology

SETTINGS = {"heartbeat_interval": 0.5, "rest_workers": 1}


@pytest.fixture
def tls_network(tmp_path):
    path = ring_topology(tmp_path, peers=3, settings=SETTINGS)
    data = yaml.safe_load(path.read_text())
    data["security"] = {"tls": True, "read": "members", "trusted_networks": []}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    launcher("up", str(path))
    try:
        yield path, data
    finally:
        launcher("down", str(path), check=False)


def test_a_tls_network_serves_https_and_grpc_that_only_its_ca_verifies(tls_network, tmp_path):
    path, data = tls_network
    ca = tmp_path / ".run" / "topology" / "tls" / "ca.pem"
    maestro = f"https://127.0.0.1:{data['maestro']['port']}"
    operator = {"Authorization": f"Bearer {operator_token(read_secret(tmp_path / '.p2p-secret'))}"}
    peers = requests.get(maestro + "/peers", verify=str(ca), headers=operator, timeout=5).json()["peers"]
    assert sorted((p["name"], p["alive"], p["rest_url"][:8]) for p in peers) == [
        (f"peer{i}", True, "https://") for i in (1, 2, 3)
    ]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(maestro + "/health", timeout=5)  # the system's CAs do not know this network
    # another host derives the same CA from the secret file alone
    other_host_ca = tmp_path / "copied-ca.pem"
    other_host_ca.write_bytes(ca_certificate(read_secret(tmp_path / ".p2p-secret")))
    assert requests.get(maestro + "/health", verify=str(other_host_ca), timeout=5).ok
    # read: members (and nobody trusted): no token, no directory
    assert requests.get(maestro + "/peers", verify=str(ca), timeout=5).status_code == 401

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("P2P_TOKEN", None)
    mine = tmp_path / "mine.txt"
    mine.write_bytes(os.urandom(100_000))

    def client(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "peer_app.client", "--maestro", maestro, *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip

    peer2 = f"https://127.0.0.1:{data['peers'][1]['rest_port']}"
    sent = client("upload", str(mine), "--to", peer2, "--name", "over-tls.txt")
    assert sent.returncode == 0, sent.stderr
    got = client("download", "over-tls.txt", "--out", str(tmp_path / "back.txt"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.txt").read_bytes() == mine.read_bytes()
    found = client("search", "archivo", "--peer", peer2, "--ttl", "3")  # peers flood each other with credentials
    assert found.returncode == 0 and "3 result(s)" in found.stdout, found.stdout + found.stderr
