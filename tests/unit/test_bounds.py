"""Bounded input at the REST apps: body size (413), files per registration, heartbeat interval, /directory pages."""

from __future__ import annotations

import io
import unicodedata

import pytest

from common.config import Settings

SHA = "c" * 64
LIMITS = Settings(max_body_bytes=64 * 1024, max_files_per_peer=50, max_heartbeat_interval=10.0)


def entry(name: str) -> dict:
    return {"name": name, "size": 1, "mtime": 1.7e9, "sha256": SHA}


def registration(name: str = "p1", files=(), **extra) -> dict:
    return {"name": name, "rest_url": "http://127.0.0.1:1", "grpc_address": "127.0.0.1:2",
            "files": list(files), **extra}  # fmt: skip


@pytest.fixture
def small_maestro(make_config):
    from maestro_app import create_app

    return create_app(make_config("maestro", settings=LIMITS)).test_client()


@pytest.fixture
def small_peer(make_config):
    from peer_app import create_app

    return create_app(make_config("peer", settings=LIMITS)).test_client()


@pytest.mark.parametrize("app", ["small_maestro", "small_peer"])
def test_a_declared_body_over_max_body_bytes_is_413_too_large(request, app):
    client = request.getfixturevalue(app)
    resp = client.post("/register", data=b"{" + b" " * LIMITS.max_body_bytes + b"}",
                       content_type="application/json")  # fmt: skip
    assert resp.status_code == 413 and resp.get_json()["error"] == "too_large"
    assert resp.headers["Connection"] == "close"


@pytest.mark.parametrize("app", ["small_maestro", "small_peer"])
def test_a_chunked_body_over_max_body_bytes_is_413_too(request, app):
    client = request.getfixturevalue(app)
    body = b"{" + b" " * LIMITS.max_body_bytes + b"}"
    resp = client.post("/register", input_stream=io.BytesIO(body), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert resp.status_code == 413 and resp.get_json()["error"] == "too_large"


def test_a_chunked_body_under_the_limit_is_read_as_usual(small_maestro):
    import json

    body = json.dumps(registration(files=[entry("a.txt")])).encode()
    resp = small_maestro.post("/register", input_stream=io.BytesIO(body), content_type="application/json",
                              headers={"Transfer-Encoding": "chunked"},
                              environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert resp.status_code == 200, resp.get_json()


def test_more_files_than_max_files_per_peer_is_413_and_changes_nothing(small_maestro):
    assert small_maestro.post("/register", json=registration(files=[entry("keep.txt")])).status_code == 200
    resp = small_maestro.post("/register", json=registration(files=[entry(f"f{i}") for i in range(51)]))
    assert resp.status_code == 413 and "max_files_per_peer" in resp.get_json()["detail"]
    assert small_maestro.get("/locate?file=keep.txt").status_code == 200


def test_nfc_and_nfd_spellings_of_one_name_in_one_registration_are_a_400(small_maestro):
    nfc = "caf\u00e9.txt"
    resp = small_maestro.post(
        "/register", json=registration(files=[entry(nfc), entry(unicodedata.normalize("NFD", nfc))])
    )
    assert resp.status_code == 400 and "listed twice" in resp.get_json()["detail"]


def test_an_nfd_name_is_registered_and_located_as_its_nfc_form(small_maestro):
    nfd = unicodedata.normalize("NFD", "caf\u00e9.txt")
    assert small_maestro.post("/register", json=registration(files=[entry(nfd)])).status_code == 200
    assert small_maestro.get("/locate", query_string={"file": "caf\u00e9.txt"}).get_json()["file"] == "caf\u00e9.txt"
    assert small_maestro.get("/locate", query_string={"file": nfd}).status_code == 200


@pytest.mark.parametrize("interval", [0, 0.01, 10.5, 3600, float("nan"), float("inf"), "2", True], ids=str)
def test_a_heartbeat_interval_outside_its_range_is_a_400(small_maestro, interval):
    resp = small_maestro.post("/register", json=registration(heartbeat_interval=interval))
    assert resp.status_code == 400 and "heartbeat_interval" in resp.get_json()["detail"]


@pytest.mark.parametrize("interval", [0.05, 2, 10])
def test_a_heartbeat_interval_within_its_range_is_kept(small_maestro, interval):
    assert small_maestro.post("/register", json=registration(heartbeat_interval=interval)).status_code == 200
    assert small_maestro.get("/peers").get_json()["peers"][0]["heartbeat_interval"] == interval


def test_the_directory_answers_in_bounded_pages_that_cover_every_file(small_maestro):
    for peer in ("p1", "p2", "p3"):
        files = [entry(f"{peer}-{i:02d}") for i in range(40)] + [entry("shared.txt")]
        assert small_maestro.post("/register", json=registration(peer, files)).status_code == 200
    page = small_maestro.get("/directory?limit=25").get_json()
    assert page["count"] == len(page["files"]) == 25 and page["total"] == 121 and page["next"]
    seen = [f["name"] for f in page["files"]]
    while page["next"]:
        page = small_maestro.get("/directory", query_string={"limit": 25, "after": page["next"]}).get_json()
        seen += [f["name"] for f in page["files"]]
    assert len(seen) == len(set(seen)) == 121 and seen == sorted(seen)
    shared = small_maestro.get("/directory", query_string={"after": "p3-39"}).get_json()
    assert [len(f["peers"]) for f in shared["files"]] == [3] and shared["next"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "x"])
def test_a_bad_directory_limit_is_a_400(small_maestro, limit):
    assert small_maestro.get(f"/directory?limit={limit}").status_code == 400
