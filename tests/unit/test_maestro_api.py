"""The Maestro's REST API through Flask's test client."""

from __future__ import annotations

import pytest

SHA = "b" * 64


def register(client, name="peer1", files=("archivo1.txt",)):
    return client.post(
        "/register",
        json={
            "name": name,
            "rest_url": "http://127.0.0.1:9101",
            "grpc_address": "127.0.0.1:9102",
            "files": [{"name": f, "size": 5, "mtime": 1.0, "sha256": SHA} for f in files],
        },
    )


def test_registered_file_is_located(maestro):
    assert register(maestro).status_code == 200
    resp = maestro.get("/locate?file=archivo1.txt")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["file"] == "archivo1.txt"
    assert body["peers"][0]["name"] == "peer1"
    assert body["peers"][0]["grpc_address"] == "127.0.0.1:9102"
    assert body["peers"][0]["sha256"] == SHA


def test_status_peers_and_directory(maestro):
    register(maestro, "peer1", ["a.txt"])
    register(maestro, "peer2", ["a.txt", "b.txt"])
    assert maestro.get("/").get_json()["status"] == "ok"
    assert maestro.get("/").get_json()["files"] == 3
    peers = maestro.get("/peers").get_json()["peers"]
    assert {p["name"] for p in peers} == {"peer1", "peer2"}
    assert all({"rest_url", "grpc_address", "alive", "last_seen"} <= p.keys() for p in peers)
    files = {f["name"]: f for f in maestro.get("/directory").get_json()["files"]}
    assert [p["name"] for p in files["a.txt"]["peers"]] == ["peer1", "peer2"]


def test_unknown_file_is_404_json(maestro):
    resp = maestro.get("/locate?file=nothing.txt")
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"


def test_heartbeat_keeps_a_peer_and_unknown_peer_is_404(maestro):
    register(maestro)
    assert maestro.post("/heartbeat", json={"name": "peer1"}).status_code == 200
    assert maestro.post("/heartbeat", json={"name": "ghost"}).status_code == 404


BAD_REQUESTS = [
    ("locate-without-file", "GET", "/locate", None, 400),
    ("locate-empty-file", "GET", "/locate?file=", None, 400),
    ("locate-escape", "GET", "/locate?file=../etc/passwd", None, 400),
    ("locate-oversized", "GET", "/locate?file=" + "a" * 5000, None, 400),
    ("register-not-json", "POST", "/register", "plain text", 400),
    ("register-json-list", "POST", "/register", [1, 2], 400),
    ("register-bad-url", "POST", "/register", {"name": "p", "rest_url": "ftp://x", "grpc_address": "h:1"}, 400),
    # the Maestro's /ui/search calls a peer's URL with its own credential: scheme://host:port only
    ("register-url-path", "POST", "/register", {"name": "p", "rest_url": "http://h:1/x?y", "grpc_address": "h:1"}, 400),
    ("register-url-user", "POST", "/register", {"name": "p", "rest_url": "http://u@h:1", "grpc_address": "h:1"}, 400),
    ("register-bad-name", "POST", "/register", {"name": "P!", "rest_url": "http://h:1", "grpc_address": "h:1"}, 400),
    (
        "register-files-not-list",
        "POST",
        "/register",
        {"name": "p", "rest_url": "http://h:1", "grpc_address": "h:1", "files": "a"},
        400,
    ),
    (
        "register-bad-interval",
        "POST",
        "/register",
        {"name": "p", "rest_url": "http://h:1", "grpc_address": "h:1", "heartbeat_interval": -1},
        400,
    ),
    ("heartbeat-no-name", "POST", "/heartbeat", {}, 400),
    ("unknown-path", "GET", "/nope", None, 404),
    ("wrong-method", "DELETE", "/locate", None, 405),
    ("get-register", "GET", "/register", None, 405),
]


@pytest.mark.parametrize("method,path,body,status", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_json_error(maestro, method, path, body, status):
    kwargs = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
    resp = maestro.open(path, method=method, **kwargs)
    assert resp.status_code == status
    body = resp.get_json()
    assert set(body) == {"error", "detail"}
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    "query",
    ["file=archivo1.txt", "file=archivo%31.txt", "file=archivo1.txt&file=x", "x=1&file=archivo1.txt"],
    ids=["plain", "escaped", "repeated", "second"],
)
def test_locate_fast_path_answers_exactly_like_the_flask_view(maestro_config, query):
    from werkzeug.test import Client

    from maestro_app import create_app

    app = create_app(maestro_config)
    fast, flask_only = app.test_client(), Client(app.wsgi_app.app)  # type: ignore[attr-defined]  # the fast path wraps Flask's own
    register(fast)
    via_fast, via_flask = fast.get(f"/locate?{query}"), flask_only.get(f"/locate?{query}")
    assert via_fast.status_code == via_flask.status_code == 200
    assert via_fast.get_data() == via_flask.get_data()
    assert via_fast.headers["Content-Type"] == via_flask.headers["Content-Type"]


def test_locate_fast_path_is_counted_in_metrics(maestro):
    register(maestro)
    for _ in range(3):
        assert maestro.get("/locate?file=archivo1.txt").status_code == 200
    maestro.get("/locate?file=missing.txt")
    text = maestro.get("/metrics").get_data(as_text=True)
    assert 'p2p_http_requests_total{endpoint="/locate",method="GET",status="200"} 3.0' in text
    assert 'p2p_http_requests_total{endpoint="/locate",method="GET",status="404"} 1.0' in text


def test_a_locate_the_fast_path_leaves_to_flask_has_its_caller_checked_once(maestro, monkeypatch):
    guard = maestro.application.extensions["guard"]
    checks: list[str] = []
    check = guard.check

    def counted(kind, *args):
        checks.append(kind)
        return check(kind, *args)

    monkeypatch.setattr(guard, "check", counted)
    assert maestro.get("/locate?file=missing.txt").status_code == 404  # not a 200: Flask answers it
    assert len(checks) == 1
