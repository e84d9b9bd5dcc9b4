"""A search whose caller hangs up stops everywhere: real peers, and a friend that never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import replace

import pytest
import requests

from common.config import Friend, Settings
from tests.support import node_configs, wait_until, write_nodes


class Tarpit:
    """A 'peer' that reads requests and never answers; it notes when a /search hop's caller hangs up."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))  # the kernel's choice: no window for another to take it
        self.port = self.server.getsockname()[1]
        self.search_closed: list[float] = []  # monotonic times a /search connection was closed by its peer
        self.search_opened = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            first = conn.recv(4096)
            is_search = first.startswith(b"GET /search")
            self.search_opened += is_search
            with contextlib.suppress(OSError):
                while conn.recv(4096):
                    pass
            if is_search:
                self.search_closed.append(time.monotonic())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def tarpit():
    pit = Tarpit()
    yield pit
    pit.close()


def test_a_search_whose_caller_gives_up_stops_on_every_peer(tmp_path, tarpit):
    # peer1 asks peer2 and peer3; peer2's primary friend is the tarpit, which holds peer2's hop for
    # as long as peer2 waits. The caller gives up after 0.5 s of a 5 s budget: a second later
    # nobody may still wait on a hop of that search.
    settings = Settings(heartbeat_interval=2.0, request_timeout=5.0, search_timeout=5.0)
    configs = node_configs(tmp_path, ["peer1", "peer2", "peer3"], settings)
    configs["peer2"] = replace(
        configs["peer2"],
        friends={"primary": Friend("tarpit", tarpit.url), "backup": Friend("peer3", configs["peer3"].rest_url)},
    )
    nodes = write_nodes(tmp_path, {k: v for k, v in configs.items() if k != "maestro"})
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_healthy()
        opened = tarpit.search_opened
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            requests.get(nodes["peer1"].url + "/search", params={"query": "x"}, timeout=0.5)
        gave_up = time.monotonic()
        assert gave_up - started < 1.0
        wait_until(lambda: tarpit.search_opened > opened, 5, what="peer2's hop reached the tarpit")
        wait_until(lambda: tarpit.search_closed, 10, what="peer2 hung up on the tarpit")
        assert tarpit.search_closed[0] - gave_up <= 1.0, "a peer went on waiting for a search nobody awaited"
    finally:
        for node in nodes.values():
            node.stop()
