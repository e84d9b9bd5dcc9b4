"""A test network's node is healthy only when its own process answers on its port (control/processes.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from control.processes import Node, Process
from tests.support import recording_server


@dataclasses.dataclass
class Running:
    """What Node.wait_healthy asks of a started process: still running, and its pid."""

    pid: int

    def poll(self) -> int | None:
        return None


def node_on(port: int, pid: int, make_config, tmp_path: Path) -> Node:
    node = Node(dataclasses.replace(make_config("maestro"), rest_port=port), tmp_path / "maestro.json")
    node.processes = [Process([], {}, tmp_path / "maestro.log", popen=Running(pid))]  # type: ignore[arg-type]
    return node


def test_a_port_another_process_answers_on_is_not_the_nodes_health(make_config, tmp_path):
    with recording_server(200, b'{"status": "ok"}') as (url, _):  # this test's process listens, not the node's
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(AssertionError, match="another process than maestro holds it"):
            node_on(port, os.getppid(), make_config, tmp_path).wait_healthy(timeout=1.0)
        node_on(port, os.getpid(), make_config, tmp_path).wait_healthy(timeout=1.0)  # its own: healthy
