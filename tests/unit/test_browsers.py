"""Browsers are strangers: the Host check and the cross-site check (common/browsers.py, common/web.py)."""

from __future__ import annotations

import pytest

from common.browsers import HostCheck, check_host_name, cross_site, split_host


@pytest.mark.parametrize(
    ("header", "parts"),
    [
        ("localhost:9000", ("localhost", 9000)),
        ("Maestro.Example.ORG.", ("maestro.example.org", None)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", None)),
        ("10.0.0.2", ("10.0.0.2", None)),
        ("evil.test:9000:1", None),
        ("evil.test:", None),
        ("evil.test:x", None),
        ("[::1", None),
        ("[::1]x", None),
        ("::1", None),
    ],
)
def test_a_host_header_is_split_into_name_and_port_or_refused(header, parts):
    assert split_host(header) == parts


def test_a_node_answers_to_its_names_and_to_any_address_never_to_another_name():
    hosts = HostCheck.of_node("maestro.lan", "0.0.0.0", ["p2p.example.org"])
    for ok in ("maestro.lan:9000", "MAESTRO.LAN", "localhost:9000", "localhost.", "p2p.example.org:80",
               "127.0.0.1:9000", "[::1]:9000", "192.0.2.7:9000", "[fe80::1%25eth0]:9000", None, ""):  # fmt: skip
        assert hosts.accepts(ok), ok
    for refused in ("evil.test:9000", "0.0.0.0.evil.test", "maestro.lan.evil.test", "127.0.0.1.nip.io:9000",
                    "lan", "evil.test:9000:9000", "x.localhost", "2130706433"):  # fmt: skip
        assert not hosts.accepts(refused), refused


def test_a_bind_name_is_accepted_a_wildcard_bind_adds_no_name():
    assert HostCheck.of_node("10.0.0.2", "peer1.internal").accepts("peer1.internal:9001")
    assert HostCheck.of_node("10.0.0.2", "::").names == {"10.0.0.2", "localhost"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Maestro.Example.org.", "maestro.example.org"), ("peer-1", "peer-1"), ("10.0.0.2", "10.0.0.2"), ("::1", "::1")],
)
def test_allowed_hosts_entries_are_host_names_or_addresses(value, expected):
    assert check_host_name(value) == expected


@pytest.mark.parametrize(
    "value", ["maestro:9000", "http://maestro", "", "-bad.org", "a..b", "*.example.org", "x" * 254]
)
def test_allowed_hosts_refuses_ports_schemes_and_wildcards(value):
    with pytest.raises(ValueError):
        check_host_name(value)


def req(method="POST", origin=None, site=None, mode=None, dest=None, host="localhost:9000", scheme="http"):
    return cross_site(method, scheme, host, origin, site, mode, dest)


def test_plain_clients_and_the_nodes_own_page_are_not_cross_site():
    assert not req()  # curl -X POST: no Origin, no Sec-Fetch-*
    assert not req(origin="http://localhost:9000", site="same-origin", mode="cors", dest="empty")
    assert not req("GET", site="same-origin", mode="cors", dest="empty")  # the page's own fetch()
    assert not req("GET", site="none", mode="navigate", dest="document")  # a typed URL, a bookmark
    assert not req(origin="http://localhost", host="localhost:80")  # default ports are the same origin
    assert not req(origin="https://p.example.org", host="p.example.org", scheme="https")


def test_another_sites_page_is_cross_site_except_a_link_followed_to_a_page():
    assert req(origin="http://evil.test:8000", site="cross-site", mode="navigate", dest="document")  # a form POST
    assert req(origin="http://localhost:8000", site="same-site", mode="cors", dest="empty")  # another local port
    assert req("GET", site="cross-site", mode="no-cors", dest="image")  # <img src=.../search?q=...>
    assert req("GET", site="cross-site", mode="cors", dest="empty")
    assert not req("GET", site="cross-site", mode="navigate", dest="document")  # a link to /ui


def test_without_fetch_metadata_the_origin_decides():
    assert req(origin="http://evil.test:9000")  # an older browser's cross-site form
    assert req(origin="http://localhost:9001")  # another node's page: another port is another origin
    assert req(origin="https://localhost:9000")  # another scheme
    assert req(origin="null")  # a sandboxed frame, a file:// page
    assert req(origin="http://localhost:9000", host="evil.test:9000:1")  # a Host that does not parse
    assert req(origin="http://localhost:9000", host=None)


# --- the REST apps --------------------------------------------------------------------------------

REGISTRATION = {"name": "peer1", "rest_url": "http://127.0.0.1:1", "grpc_address": "127.0.0.1:2",
                "files": [{"name": "a.txt", "size": 1, "mtime": 1.7e9, "sha256": "c" * 64}]}  # fmt: skip


def test_the_maestro_refuses_a_name_it_does_not_serve_with_421_before_anything_else(maestro):
    resp = maestro.post("/register", json=REGISTRATION, headers={"Host": "evil.test:9000"})
    assert resp.status_code == 421
    body = resp.get_json()
    assert body["error"] == "misdirected_request" and "security.allowed_hosts" in body["detail"]
    assert maestro.get("/peers", headers={"Host": "evil.test:9000"}).status_code == 421
    assert maestro.get("/peers").get_json()["peers"] == []  # nothing was registered
    assert maestro.post("/register", json=REGISTRATION, headers={"Host": "localhost:9000"}).status_code == 200


def test_the_locate_fast_path_leaves_a_misdirected_or_cross_site_locate_to_flask(maestro):
    assert maestro.post("/register", json=REGISTRATION).status_code == 200
    assert maestro.get("/locate?file=a.txt", headers={"Host": "127.0.0.1:9000"}).status_code == 200
    refused = maestro.get("/locate?file=a.txt", headers={"Host": "evil.test:9000"})
    assert refused.status_code == 421 and refused.get_json()["error"] == "misdirected_request"
    cross = maestro.get("/locate?file=a.txt", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})
    assert cross.status_code == 403 and cross.get_json()["error"] == "cross_site"
    own_page = maestro.get("/locate?file=a.txt", headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"})
    assert own_page.status_code == 200


def test_a_cross_site_form_post_to_refresh_changes_nothing_and_curl_still_refreshes(peer):
    form = {"Origin": "http://evil.test:8000", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document", "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    resp = peer.post("/refresh", headers=form)
    assert resp.status_code == 403 and resp.get_json()["error"] == "cross_site"
    assert peer.post("/bootstrap", headers={"Origin": "null"}).status_code == 403
    assert peer.post("/refresh").status_code == 503  # curl: through to the view (its Maestro is down here)


def test_the_live_page_opens_from_a_link_and_reads_same_origin(maestro):
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert maestro.get("/ui", headers=link).status_code == 200
    own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    assert maestro.get("/peers", headers=own).status_code == 200
    assert maestro.get("/peers", headers={**own, "Sec-Fetch-Site": "cross-site"}).status_code == 403
