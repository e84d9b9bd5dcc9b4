"""A peer's REST API through Flask's test client (friends are unreachable here)."""

from __future__ import annotations

import pytest

from tests.support import FakePeers


def test_health_and_info(peer, peer_config):
    assert peer.get("/health").get_json() == {"status": "ok", "peer": "peer1"}
    info = peer.get("/info").get_json()
    assert info["name"] == "peer1"
    assert info["grpc_address"] == peer_config.grpc_address
    assert info["friends"]["primary"]["name"] == "peer2"
    assert info["file_count"] == 2
    assert peer.get("/").get_json()["status"] == "ok"


def test_files_lists_name_size_mtime_and_sha256(peer):
    files = {f["name"]: f for f in peer.get("/files").get_json()["files"]}
    assert set(files) == {"archivo1.txt", "notes.md"}
    assert files["archivo1.txt"]["size"] == 5
    assert len(files["archivo1.txt"]["sha256"]) == 64
    assert files["archivo1.txt"]["mtime"] > 0


def test_files_leaves_out_hidden_files_and_symlinks(peer, peer_config, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    (tmp_path / "shared" / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "shared" / ".hidden").write_text("x")
    names = {f["name"] for f in peer.get("/files").get_json()["files"]}
    assert names == {"archivo1.txt", "notes.md"}


def test_exact_search_finds_only_own_files(peer):
    assert peer.get("/search?file=archivo1.txt").get_json()["found"] is True
    assert peer.get("/search?file=other.txt").get_json()["found"] is False


def test_distributed_search_with_dead_friends_returns_local_results_and_names_them(peer):
    body = peer.get("/search?query=ARCHIVO&fanout=2&ttl=3").get_json()
    assert body["complete"] is False
    assert sorted(m["peer"] for m in body["missing"]) == ["peer2", "peer3"]  # both asked, both failed
    assert [r["file"] for r in body["results"]] == ["archivo1.txt"]
    assert body["results"][0]["peer"] == "peer1"
    assert "grpc_address" in body["results"][0]


def test_seed_spelling_q_is_a_search_query(peer):
    body = peer.get("/search?q=notes&fanout=0").get_json()
    assert [r["file"] for r in body["results"]] == ["notes.md"]


def test_locate_finds_a_local_file(peer):
    body = peer.get("/locate?file=archivo1.txt").get_json()
    assert body["peers"][0]["name"] == "peer1"


def test_locate_with_dead_friends_is_404_that_says_it_is_not_complete(peer):
    resp = peer.get("/locate?file=missing.txt")
    assert resp.status_code == 404
    body = resp.get_json()
    assert body["complete"] is False and sorted(m["peer"] for m in body["missing"]) == ["peer2", "peer3"]


def test_register_remembers_a_peer_and_peers_lists_it(peer_config):
    from peer_app import create_app

    peer = create_app(peer_config, transport=FakePeers({"http://127.0.0.1:9555": "peer9"})).test_client()
    resp = peer.post("/register", json={"url": "http://127.0.0.1:9555", "name": "peer9"})
    assert resp.status_code == 200
    urls = [p["url"] for p in peer.get("/peers").get_json()["peers"]]
    assert "http://127.0.0.1:9555" in urls
    assert urls[:2] == [u for u in urls if u != "http://127.0.0.1:9555"][:2]  # friends come first


def test_bootstrap_reports_unreachable_friends_without_failing(peer):
    body = peer.post("/bootstrap").get_json()
    assert [f["ok"] for f in body["friends"]] == [False, False]


def test_refresh_with_maestro_down_is_503(peer):
    resp = peer.post("/refresh")
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "unavailable"


BAD_REQUESTS = [
    ("search-nothing", "GET", "/search", None, 400),
    ("search-empty-query", "GET", "/search?query=", None, 400),
    ("search-oversized", "GET", "/search?query=" + "q" * 1000, None, 400),
    ("search-negative-fanout", "GET", "/search?query=a&fanout=-1", None, 400),
    ("search-text-ttl", "GET", "/search?query=a&ttl=ten", None, 400),
    ("search-float-fanout", "GET", "/search?query=a&fanout=1.5", None, 400),
    ("search-bad-qid", "GET", "/search?query=a&qid=../../x", None, 400),
    ("search-nan-budget", "GET", "/search?query=a&budget=nan", None, 400),
    ("search-file-escape", "GET", "/search?file=../x", None, 400),
    ("locate-without-file", "GET", "/locate", None, 400),
    ("locate-nul", "GET", "/locate?file=a%00b", None, 400),
    ("locate-absolute", "GET", "/locate?file=/etc/passwd", None, 400),
    ("locate-zero-ttl", "GET", "/locate?file=a&ttl=0", None, 400),
    ("register-not-json", "POST", "/register", "url=http://x", 400),
    ("register-no-url", "POST", "/register", {}, 400),
    ("register-bad-url", "POST", "/register", {"url": "javascript:alert(1)"}, 400),
    ("register-bad-port", "POST", "/register", {"url": "http://h:99999999"}, 400),
    ("register-bad-name", "POST", "/register", {"url": "http://h:1", "name": 7}, 400),
    ("unknown-path", "GET", "/admin", None, 404),
    ("wrong-method", "POST", "/files", None, 405),
    ("get-refresh", "GET", "/refresh", None, 405),
]


@pytest.mark.parametrize("method,path,body,status", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_json_error(peer, method, path, body, status):
    kwargs = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
    resp = peer.open(path, method=method, **kwargs)
    assert resp.status_code == status
    assert set(resp.get_json()) == {"error", "detail"}


def test_ttl_and_fanout_above_the_maximum_are_capped(peer_config, tmp_path):
    from peer_app import create_app

    learned = {f"http://127.0.0.1:{9600 + i}": f"p{i}" for i in range(5)}
    transport = FakePeers({**learned, **{f.rest_url: f.name for f in peer_config.friends.values()}})
    client = create_app(peer_config, transport=transport).test_client()
    for url in learned:
        assert client.post("/register", json={"url": url}).status_code == 200
    resp = client.get("/search?query=a&ttl=1000&fanout=1000")
    assert resp.status_code == 200
    sent = [params for _, route, params in transport.calls if route == "/search"]
    settings = peer_config.settings
    assert len(sent) == min(settings.search_max_fanout, 7)
    assert {p["ttl"] for p in sent} == {settings.search_max_ttl - 1}
