"""Helpers for tests: the project root, free ports, polling, and nodes run as child processes.

Nodes, processes and polling live in control/processes.py (benchmarks use them too); they are
re-exported here so tests import one module.
"""

from __future__ import annotations

from pathlib import Path

import requests

from control.generate import free_ports
from control.processes import PROJECT_ROOT, Node, Process, node_configs, wait_until, write_nodes

ROOT: Path = PROJECT_ROOT

__all__ = ["ROOT", "Node", "Process", "free_port", "get_json", "node_configs", "wait_until", "write_nodes"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the ephemeral range and never one of the seed ports 9000-9006."""
    return free_ports(1, host)[0]


def get_json(url: str, timeout: float = 5.0, **kwargs) -> tuple[int, dict]:
    resp = requests.get(url, timeout=timeout, **kwargs)
    return resp.status_code, resp.json()
