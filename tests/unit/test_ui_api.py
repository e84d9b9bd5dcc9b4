"""The live page's server side (docs/operations.md): GET /ui and its files, friends and age in /peers, /ui/search."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


def register(client, name, friends=None, files=(), url="http://127.0.0.1:1"):
    body = {
        "name": name,
        "rest_url": url,
        "grpc_address": "127.0.0.1:2",
        "heartbeat_interval": 0.5,
        "files": [{"name": f, "size": 1, "mtime": 1.0, "sha256": "a" * 64} for f in files],
    }
    if friends is not None:
        body["friends"] = friends
    return client.post("/register", json=body)


def test_page_and_its_files_are_served_with_a_same_origin_policy(maestro):
    page = maestro.get("/ui")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert 'src="/ui/static/ui.js"' in html and 'href="/ui/static/ui.css"' in html
    assert "http://" not in html and "https://" not in html  # nothing from outside
    for asset, kind in (("ui.js", "javascript"), ("ui.css", "text/css")):
        resp = maestro.get(f"/ui/static/{asset}")
        assert resp.status_code == 200 and kind in resp.content_type
    assert maestro.get("/ui/static/nothing.js").status_code == 404


def test_peers_carry_their_friends_and_heartbeat_age(maestro):
    assert register(maestro, "peer1", {"primary": "peer2", "backup": "peer3"}).status_code == 200
    assert register(maestro, "peer2").status_code == 200  # an older peer that sends no friends
    peers = {p["name"]: p for p in maestro.get("/peers").get_json()["peers"]}
    assert peers["peer1"]["friends"] == {"primary": "peer2", "backup": "peer3"}
    assert peers["peer2"]["friends"] == {}
    assert 0 <= peers["peer1"]["age"] < 5


@pytest.mark.parametrize(
    "friends",
    [["peer2"], {"primary": "Peer 2"}, {"primary": 3}, {"third": "peer2"}, "peer2"],
)
def test_malformed_friends_are_refused(maestro, friends):
    resp = register(maestro, "peer1", friends)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "bad_request" and "friends" in resp.get_json()["detail"]


def test_a_directory_from_before_friends_gains_the_column(maestro_config):
    from maestro_app.directory import Directory

    path = Path(maestro_config.db_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE peers (name TEXT PRIMARY KEY, rest_url TEXT NOT NULL, grpc_address TEXT NOT NULL,"
            " heartbeat_interval REAL NOT NULL, registered_at REAL NOT NULL, last_seen REAL NOT NULL)"
        )
        conn.execute("INSERT INTO peers VALUES ('old', 'http://127.0.0.1:1', '127.0.0.1:2', 2, 0, 0)")
    directory = Directory(str(path), default_interval=2.0, expire_after_beats=3)
    Directory(str(path), default_interval=2.0, expire_after_beats=3)  # a second worker opening it
    assert [(p["name"], p["friends"]) for p in directory.peers()] == [("old", {})]


def test_search_needs_a_query_and_a_live_known_peer(maestro):
    assert maestro.get("/ui/search").status_code == 400
    resp = maestro.get("/ui/search?query=x")
    assert resp.status_code == 503 and "no live peer" in resp.get_json()["detail"]
    register(maestro, "peer1")
    resp = maestro.get("/ui/search?query=x&peer=ghost")
    assert resp.status_code == 404 and "ghost" in resp.get_json()["detail"]
    resp = maestro.get("/ui/search?query=x&peer=peer1")  # registered, but nothing listens at its URL
    assert resp.status_code == 503 and "peer1" in resp.get_json()["detail"]
