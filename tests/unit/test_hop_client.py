"""The keep-alive client every search and locate hop uses, against a real local HTTP server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from client.api import HopClient
from common.errors import NoAnswer, NotFound, TimedOut, Unavailable
from tests.support import free_port, wait_until


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ports: list[int] = []
    release = threading.Event()  # what /held waits for

    def do_GET(self):  # noqa: N802 - the http.server API
        Handler.ports.append(self.client_address[1])
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/held"):
            Handler.release.wait(5.0)
        if self.path.startswith("/huge"):  # a hostile friend: an answer without end
            self.send_response(200)
            self.send_header("Content-Length", str(HopClient.MAX_ANSWER + 2))
            self.end_headers()
            self.wfile.write(b" " * (HopClient.MAX_ANSWER + 2))
            return
        if self.path.startswith("/cut"):  # a peer killed halfway through its answer
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"results": [')
            self.close_connection = True
            return
        status, body = (
            (404, {"error": "not_found", "detail": "nothing here"})
            if "missing" in self.path
            else (
                200,
                {"path": self.path},
            )
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the client that gave up on /slow closed its end: expected here


@pytest.fixture
def server():
    Handler.ports = []
    Handler.release = threading.Event()
    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_answers_are_parsed_and_one_connection_is_kept_for_the_next_call(server):
    hops = HopClient()
    assert hops.get(server + "/search", {"query": "a b", "ttl": 2}, 2.0) == {"path": "/search?query=a+b&ttl=2"}
    hops.get(server + "/search", {"query": "c"}, 2.0)
    assert len(set(Handler.ports)) == 1  # the same client socket both times


def test_an_error_comes_back_as_the_class_the_server_named(server):
    with pytest.raises(NotFound, match="nothing here"):
        HopClient().get(server + "/missing", {}, 2.0)


def test_a_connection_idle_longer_than_the_servers_keep_alive_is_not_reused(server):
    hops = HopClient(max_idle_age=0.0)  # any idle connection is older than that
    hops.get(server + "/a", {}, 2.0)
    hops.get(server + "/b", {}, 2.0)
    assert len(set(Handler.ports)) == 2


def test_a_connection_the_server_closed_is_replaced_once(server):
    hops = HopClient()
    hops.get(server + "/a", {}, 2.0)
    ((conn, _),) = hops._idle[("127.0.0.1", int(server.rsplit(":", 1)[1]))]
    conn.sock.shutdown(socket.SHUT_RDWR)  # as if the peer dropped the idle connection
    assert hops.get(server + "/b", {}, 2.0) == {"path": "/b?"}


def test_a_peer_that_answers_too_late_is_timed_out_and_one_that_is_gone_is_unavailable(server):
    with pytest.raises(TimedOut):
        HopClient().get(server + "/slow", {}, 0.2)
    with pytest.raises(Unavailable) as gone:
        HopClient().get(f"http://127.0.0.1:{free_port()}/search", {}, 1.0)
    assert not isinstance(gone.value, TimedOut)


def test_an_answer_cut_halfway_is_no_answer_not_an_error_of_ours(server):
    with pytest.raises(NoAnswer, match="cut halfway"):
        HopClient().get(server + "/cut", {}, 2.0)


def test_an_answer_bigger_than_any_peer_sends_is_refused_after_the_limit(server):
    with pytest.raises(Unavailable, match="more than 16 MiB"):
        HopClient().get(server + "/huge", {}, 5.0)


class PausedAfterPooling(HopClient):
    """Holds the call made from the thread named "a" just after its connection went back to the pool."""

    def __init__(self) -> None:
        super().__init__()
        self.pooled = threading.Event()
        self.go = threading.Event()

    def _checkin(self, *args) -> None:
        super()._checkin(*args)
        if threading.current_thread().name == "a":
            self.pooled.set()
            self.go.wait(5.0)


def test_abandoning_a_flood_never_cuts_a_connection_another_query_picked_up_from_the_pool(server):
    hops = PausedAfterPooling()
    answers: dict[str, dict] = {}

    def ask(qid: str, path: str) -> None:
        answers[qid] = hops.get(server + path, {"qid": qid}, 5.0)

    a = threading.Thread(target=ask, args=("a", "/search"), name="a")
    a.start()
    assert hops.pooled.wait(5.0)  # a's call got its answer; its connection is idle in the pool
    b = threading.Thread(target=ask, args=("b", "/held"), name="b")
    b.start()  # b takes that connection and waits for its answer
    wait_until(lambda: len(Handler.ports) == 2, 5.0)
    hops.abandon({"a"})  # a's caller hung up: a's calls under way are cut, and only those
    Handler.release.set()
    hops.go.set()
    a.join(5.0)
    b.join(5.0)
    assert answers["b"] == {"path": "/held?qid=b"}
    assert len(Handler.ports) == 2  # b's request was sent once: its connection was not cut under it


def test_a_peer_that_does_not_answer_does_not_load_requests_into_the_node():
    """Saying why a connection failed imported requests: ~6 MiB more in a node's gRPC process and REST worker."""
    closed = socket.socket()  # bound, never listening: connections to it are refused
    closed.bind(("127.0.0.1", 0))
    code = (
        "import sys\n"
        "from client.api import node_client\n"
        "from common.credentials import NONE\n"
        "from common.errors import NoAnswer\n"
        "try:\n"
        f"    node_client(NONE).request('GET', 'http://127.0.0.1:{closed.getsockname()[1]}/health', None, None, 2.0)\n"
        "except NoAnswer as err:\n"
        "    print(err.detail)\n"
        "print('requests' in sys.modules)\n"
    )
    with closed:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    assert "connection refused" in out and out.strip().endswith("False"), out
