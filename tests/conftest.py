"""Fixtures: in-process apps on temporary folders, and real networks of processes."""
from __future__ import annotations

import pytest

from tests.support import node_configs, write_nodes


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
        return nodes

    yield start
    for node in reversed(started):
        node.stop()
