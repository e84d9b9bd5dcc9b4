"""Everything under tests/e2e/ starts real processes: it carries the e2e marker whatever the file says.

So `pytest -m "not e2e"` (`make unit`) can never start a process because a test forgot its marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from control.health import maestro_peers
from control.processes import wait_until
from tests.support import node_configs, write_nodes

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def network(tmp_path):
    """Start a Maestro and peers as real gunicorn + gRPC processes; stop them by pid afterwards.

    Call it with the peer names and (optionally) files to place before start.
    """
    started = []

    def start(peer_names=("peer1", "peer2"), files=None, settings=None):
        configs = node_configs(tmp_path, list(peer_names), settings)
        for peer, content in (files or {}).items():
            for name, data in content.items():
                (tmp_path / "data" / peer / name).write_bytes(data)
        nodes = write_nodes(tmp_path, configs)
        for node in nodes.values():
            started.append(node.start())
        for node in nodes.values():
            node.wait_healthy()
        maestro = nodes["maestro"].url  # a peer registers from its gRPC side, which may answer /health first
        wait_until(
            lambda: all((maestro_peers(maestro) or {}).get(n, {}).get("alive") for n in peer_names),
            20,
            what=f"the Maestro to list {', '.join(peer_names)} alive",
        )
        return nodes

    yield start
    for node in reversed(started):
        node.stop()
    for node in started:  # pytest shows this only when the test failed
        for proc in node.processes:
            code = proc.popen.returncode if proc.popen else None
            print(f"--- {proc.log.name} (exit {code}) ---\n{proc.tail(15)}")
