"""Helpers shared by the launcher's tests: topologies on free ports, running the CLI."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from control.generate import free_ports, generate
from control.supervisor import pid_alive  # noqa: F401  (re-exported for the tests)
from tests.support import ROOT


def seed_dict() -> dict:
    """The seed topology as a dict (the shape docs/operations.md, "The topology", describes)."""
    return {
        "maestro": {"host": "127.0.0.1", "port": 9000},
        "peers": [
            {
                "name": "peer1",
                "host": "127.0.0.1",
                "rest_port": 9001,
                "grpc_port": 9002,
                "shared_dir": "data/peer1",
                "friends": {"primary": "peer2", "backup": "peer3"},
            },
            {
                "name": "peer2",
                "host": "127.0.0.1",
                "rest_port": 9003,
                "grpc_port": 9004,
                "shared_dir": "data/peer2",
                "friends": {"primary": "peer3", "backup": "peer1"},
            },
            {
                "name": "peer3",
                "host": "127.0.0.1",
                "rest_port": 9005,
                "grpc_port": 9006,
                "shared_dir": "data/peer3",
                "friends": {"primary": "peer1", "backup": "peer2"},
            },
        ],
    }


def ring_topology(folder: Path, peers: int = 3, settings: dict | None = None, files: bool = True) -> Path:
    """Write a ring topology (friends i+1, i+2) on free ports in folder; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = generate(peers, free_ports(1 + 2 * peers), settings=settings)
    if files:
        for i, peer in enumerate(data["peers"], 1):
            shared = folder / peer["shared_dir"]
            shared.mkdir(parents=True, exist_ok=True)
            (shared / f"archivo{i}.txt").write_text(f"hola desde {peer['name']}\n", encoding="utf-8")
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def launcher(*args: str, timeout: float = 120, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python launcher.py ARGS` as a user would; fail with its output when check and rc != 0."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launcher.py"), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"launcher {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def mutate(data: dict, fn: Callable[[dict], object]) -> dict:
    out = copy.deepcopy(data)
    fn(out)
    return out
