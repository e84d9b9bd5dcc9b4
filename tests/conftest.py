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
    for node in started:  # pytest shows this only when the test failed
        for proc in node.processes:
            print(f"--- {proc.log.name} (exit {proc.popen.returncode}) ---\n{proc.tail(15)}")


@pytest.fixture
def maestro_config(tmp_path):
    from common.config import NodeConfig

    return NodeConfig(role="maestro", name="maestro", host="127.0.0.1", rest_port=1, run_dir=str(tmp_path / "run"))


@pytest.fixture
def maestro(maestro_config):
    """The Maestro app in-process (Flask test client)."""
    from maestro_app import create_app

    return create_app(maestro_config).test_client()


@pytest.fixture
def peer_config(tmp_path):
    """A peer whose friends listen nowhere (their ports were free a moment ago)."""
    from common.config import Friend, NodeConfig, Settings
    from tests.support import free_port

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "archivo1.txt").write_text("hola\n")
    (shared / "notes.md").write_text("# notes\n")
    return NodeConfig(
        role="peer",
        name="peer1",
        host="127.0.0.1",
        rest_port=free_port(),
        grpc_port=free_port(),
        shared_dir=str(shared),
        run_dir=str(tmp_path / "run"),
        maestro_url=f"http://127.0.0.1:{free_port()}",
        friends={
            "primary": Friend("peer2", f"http://127.0.0.1:{free_port()}"),
            "backup": Friend("peer3", f"http://127.0.0.1:{free_port()}"),
        },
        settings=Settings(request_timeout=0.5),
    )


@pytest.fixture
def peer(peer_config):
    """A peer's REST app in-process (Flask test client)."""
    from peer_app import create_app

    return create_app(peer_config).test_client()
