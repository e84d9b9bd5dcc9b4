"""A node that cannot listen says why and stops at once, so supervisord ends it in FATAL (no restart loop).

gunicorn alone retries a failed bind for ~5 s, longer than supervisord's startsecs, so the
program counted as started and was restarted forever; the gRPC server already gave up at once.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from common.net import is_local_address
from tests.support import free_port, write_nodes

ELSEWHERE = "198.51.100.2"  # TEST-NET-2: stands for another machine's address


@pytest.fixture
def holder():
    """A listener on a free port: the port every node below tries to take."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def _exits_quickly_with(node, words: str) -> None:
    node.start()
    try:
        for proc in node.processes:
            proc.started.wait(8)
        logs = "\n".join(p.tail() for p in node.processes)
        assert all(p.started.returncode not in (None, 0) for p in node.processes), logs
        assert words in logs, logs
        assert "Retrying in 1 second" not in logs, logs  # one bind attempt, no 5 s of retries
    finally:
        node.stop()


def test_a_rest_server_whose_port_is_taken_exits_at_once_with_the_reason(make_config, tmp_path, holder):
    maestro = replace(make_config("maestro"), rest_port=holder)
    node = write_nodes(tmp_path, {"maestro": maestro})["maestro"]
    _exits_quickly_with(node, f"cannot bind REST on 127.0.0.1:{holder}: port {holder} is already in use")


@pytest.mark.skipif(is_local_address(ELSEWHERE), reason=f"{ELSEWHERE} is an address of this machine")
def test_a_peer_on_another_machines_address_exits_at_once_with_the_reason(make_config, tmp_path):
    peer = replace(make_config("peer"), host=ELSEWHERE)
    node = write_nodes(tmp_path, {"peer1": peer})["peer1"]
    _exits_quickly_with(node, f"{ELSEWHERE} is not an address of this machine")
