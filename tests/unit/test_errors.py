"""One error vocabulary: each error comes back to the client as the same class, by its name."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from client.api import call
from common.errors import Busy, NotFound, P2PError, TooLarge, Unavailable, error_class, from_http_error
from peer_app import create_app


def all_errors() -> list[type[P2PError]]:
    todo, out = [P2PError], []
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return out


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_has_a_unique_name_status_and_exit_code(cls):
    assert error_class(cls.name) == cls
    assert cls.http_status >= 400 and 1 <= cls.exit_code <= 7
    assert type(from_http_error(cls("x").to_json())) is cls


def test_a_busy_503_comes_back_as_busy_not_unavailable():
    """Busy and Unavailable share 503: the JSON body's name tells them apart."""
    assert type(from_http_error(Busy("full").to_json())) is Busy
    assert type(from_http_error(Unavailable("down").to_json())) is Unavailable
    assert type(from_http_error(TooLarge("big").to_json())) is TooLarge


def test_an_http_call_raises_the_error_the_server_named(peer_config):
    """Over real HTTP: a peer's 404 is NotFound (a werkzeug 404 included); ttl 1: no friend to ask."""
    server = make_server("127.0.0.1", 0, create_app(peer_config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(NotFound):
            call("GET", f"{url}/locate", params={"file": "missing.txt", "ttl": 1}, timeout=5)
        with pytest.raises(NotFound):
            call("GET", f"{url}/no-such-route", timeout=5)
    finally:
        server.shutdown()
        thread.join(5)
