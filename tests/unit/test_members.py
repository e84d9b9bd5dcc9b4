"""Members only, in-process: who may call what on the Maestro, a peer's REST API and its gRPC server.

Strangers are simulated with a non-trusted REMOTE_ADDR (Flask) or with trusted_networks=()
(gRPC on loopback); the real non-loopback case runs in tests/e2e/test_attacks.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import grpc
import pytest

from common import transfer_pb2
from common.config import Security
from common.errors import Forbidden, Unauthorized, from_rpc_error
from common.security import (
    Guard,
    ensure_secret,
    grpc_metadata,
    hop_token,
    operator_token,
    peer_token,
    read_secret,
    reader_token,
)
from tests.support import FakePeers, metric_value

STRANGER = {"REMOTE_ADDR": "10.208.0.2"}
SHA = "c" * 64


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / ".p2p-secret"
    ensure_secret(path)
    return path


@pytest.fixture
def secret(secret_file) -> bytes:
    return read_secret(secret_file)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def with_security(config, secret_file, **fields):
    fields = {"local_operator": config.security.local_operator, **fields}  # the test client's loopback rule
    return dataclasses.replace(config, security=Security(secret_file=str(secret_file), **fields))


def registration(name: str) -> dict:
    return {"name": name, "rest_url": "http://10.0.0.2:9003", "grpc_address": "10.0.0.2:9004",
            "files": [{"name": "a.txt", "size": 1, "mtime": 1.0, "sha256": SHA}]}  # fmt: skip


@pytest.fixture
def members_maestro(maestro_config, secret_file):
    from maestro_app import create_app

    return create_app(with_security(maestro_config, secret_file)).test_client()


# --- the Maestro ---------------------------------------------------------------------------------


def test_a_stranger_cannot_register_or_heartbeat_at_the_maestro(members_maestro):
    for path, body in (("/register", registration("peer2")), ("/heartbeat", {"name": "peer2"})):
        resp = members_maestro.post(path, json=body, environ_base=STRANGER)
        assert resp.status_code == 401
        assert resp.get_json()["error"] == "Unauthorized"
        assert "not a member" in resp.get_json()["detail"]
    assert members_maestro.get("/peers").get_json()["peers"] == []


def test_a_peer_registers_and_beats_only_as_itself(members_maestro, secret):
    peer3 = auth(peer_token(secret, "peer3"))
    resp = members_maestro.post("/register", json=registration("peer2"), headers=peer3, environ_base=STRANGER)
    assert (resp.status_code, resp.get_json()["error"]) == (403, "Forbidden")
    assert (
        members_maestro.post("/register", json=registration("peer3"), headers=peer3, environ_base=STRANGER).status_code
        == 200
    )
    assert (
        members_maestro.post("/heartbeat", json={"name": "peer3"}, headers=peer3, environ_base=STRANGER).status_code
        == 200
    )
    resp = members_maestro.post("/heartbeat", json={"name": "peer2"}, headers=peer3, environ_base=STRANGER)
    assert resp.status_code == 403


def test_only_a_peers_own_credential_writes_its_directory_entry(members_maestro, secret):
    """Neither the operator's token, nor the reader's, nor peer2's hop credential, nor a trusted address without a
    token vouches for peer2."""
    assert members_maestro.post("/register", json=registration("peer2"), headers=auth(peer_token(secret, "peer2")),
                                environ_base=STRANGER).status_code == 200  # fmt: skip
    forged = {**registration("peer2"), "grpc_address": "10.0.0.66:1"}
    for headers, where in (
        (auth(operator_token(secret)), STRANGER),
        (auth(operator_token(secret)), {}),  # the operator's token, from loopback
        ({}, {}),  # loopback without a token: a page in the operator's browser, another local account
        (auth(reader_token(operator_token(secret))), STRANGER),
        (auth(hop_token(secret, "peer2")), STRANGER),  # what peer2 shows the friends it asks on a search
    ):
        for path, body in (("/register", forged), ("/heartbeat", {"name": "peer2"})):
            resp = members_maestro.post(path, json=body, headers=headers, environ_base=where)
            assert (resp.status_code, resp.get_json()["error"]) == (403, "Forbidden"), (path, headers, where)
    assert [p["grpc_address"] for p in members_maestro.get("/peers").get_json()["peers"]] == ["10.0.0.2:9004"]
    # the peer itself, on loopback as a node of a one-machine network is: its credential names it
    assert members_maestro.post("/register", json=forged, headers=auth(peer_token(secret, "peer2"))).status_code == 200


def test_a_network_without_a_secret_lets_trusted_addresses_register(maestro_config):
    from maestro_app import create_app

    client = create_app(maestro_config).test_client()  # no secret: nobody can show a credential
    assert client.post("/register", json=registration("peer2")).status_code == 200
    assert client.post("/register", json=registration("peer2"), environ_base=STRANGER).status_code == 401


def test_reads_stay_open_by_default(members_maestro, secret):
    members_maestro.post("/register", json=registration("peer2"), headers=auth(peer_token(secret, "peer2")))
    assert members_maestro.get("/locate?file=a.txt", environ_base=STRANGER).status_code == 200
    assert members_maestro.get("/peers", environ_base=STRANGER).status_code == 200


def test_read_members_closes_every_get_but_health(maestro_config, secret_file, secret):
    from maestro_app import create_app

    client = create_app(with_security(maestro_config, secret_file, read="members")).test_client()
    client.post("/register", json=registration("peer2"), headers=auth(peer_token(secret, "peer2")))
    for path in ("/locate?file=a.txt", "/locate?file=none.txt", "/peers", "/directory", "/", "/metrics"):
        assert client.get(path, environ_base=STRANGER).status_code == 401, path
    token = auth(peer_token(secret, "peer7"))
    assert client.get("/locate?file=a.txt", headers=token, environ_base=STRANGER).status_code == 200  # fast path
    assert client.get("/peers", headers=token, environ_base=STRANGER).status_code == 200
    reader = auth(reader_token(operator_token(secret)))
    assert client.get("/locate?file=a.txt", headers=reader, environ_base=STRANGER).status_code == 200
    assert client.get("/directory", headers=reader, environ_base=STRANGER).status_code == 200
    assert client.get("/health", environ_base=STRANGER).status_code == 200
    # The page and its scripts carry no data: they load for anyone; what they ask for needs the token.
    assert client.get("/ui", environ_base=STRANGER).status_code == 200
    assert client.get("/ui/static/ui.js", environ_base=STRANGER).status_code == 200
    assert client.get("/ui/search?query=a", environ_base=STRANGER).status_code == 401
    assert client.post("/ui", environ_base=STRANGER).status_code == 401


# --- a peer's REST API ---------------------------------------------------------------------------


def test_a_stranger_cannot_register_bootstrap_or_refresh_at_a_peer(peer_config, secret_file):
    from peer_app import create_app

    client = create_app(with_security(peer_config, secret_file)).test_client()
    for path, body in (("/register", {"url": "http://10.0.0.9:1"}), ("/bootstrap", None), ("/refresh", None)):
        assert client.post(path, json=body, environ_base=STRANGER).status_code == 401, path


def test_another_peers_credential_neither_refreshes_bootstraps_nor_introduces_others(peer_config, secret_file, secret):
    from peer_app import create_app

    peer5, peer6 = "http://10.0.0.5:9003", "http://10.0.0.6:9003"
    transport = FakePeers({peer5: "peer5", peer6: "peer6"}, guard=Guard(secret))
    client = create_app(with_security(peer_config, secret_file), transport=transport).test_client()
    as_peer5 = auth(peer_token(secret, "peer5"))
    for path in ("/bootstrap", "/refresh"):
        # not even this peer's own hop credential (a friend it searched through holds that one)
        for headers in (as_peer5, auth(reader_token(operator_token(secret))), auth(hop_token(secret, "peer1"))):
            resp = client.post(path, headers=headers, environ_base=STRANGER)
            assert (resp.status_code, resp.get_json()["error"]) == (403, "Forbidden"), path
    for token in (hop_token(secret, "peer5"), reader_token(operator_token(secret))):  # introduce nobody
        resp = client.post("/register", json={"url": peer5}, headers=auth(token), environ_base=STRANGER)
        assert (resp.status_code, resp.get_json()["error"]) == (403, "Forbidden"), token
    for body in ({"url": peer6}, {"url": peer6, "name": "peer6"}):  # peer5 introducing someone else
        resp = client.post("/register", json=body, headers=as_peer5, environ_base=STRANGER)
        assert (resp.status_code, resp.get_json()["error"]) == (403, "Forbidden"), body
    assert client.post("/register", json={"url": peer5}, headers=as_peer5, environ_base=STRANGER).status_code == 200
    assert [p["name"] for p in client.get("/peers").get_json()["peers"] if p["role"] == "learned"] == ["peer5"]


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.9:1/steal", "http://10.0.0.9:1/?x=1", "http://user@10.0.0.9:1", "http://10.0.0.9", "ftp://h:1",
     "https://10.0.0.9:1", "http://10.0.0.9:1#frag"],
    ids=["path", "query", "userinfo", "no-port", "ftp", "other-scheme", "fragment"],
)  # fmt: skip
def test_register_takes_scheme_host_port_only(peer_config, url):
    from peer_app import create_app

    transport = FakePeers({url: "peer9"})
    resp = create_app(peer_config, transport=transport).test_client().post("/register", json={"url": url})
    assert resp.status_code == 400
    assert transport.calls == []  # refused before anything was asked


def test_a_url_is_kept_only_when_it_proves_to_be_a_member(peer_config, secret_file, secret):
    from peer_app import create_app

    config = with_security(peer_config, secret_file)
    member, outsider, listener = "http://10.0.0.5:9003", "http://10.0.0.6:9003", "http://10.0.0.7:80"
    transport = FakePeers({member: "peer5", outsider: "peer6"}, guard=Guard(secret))
    transport.peers[outsider] = "peer6"
    outsider_guard = Guard(b"another network's secret, 32+ bytes long")
    honest = transport.__call__

    def answer(url, route, params, timeout):
        if url == outsider:  # a p2pnet peer of another network: its proof is wrong here
            return {"name": "peer6", "rest_url": url, "grpc_address": "h:1",
                    "proof": outsider_guard.proof("peer6", url, params["challenge"])}  # fmt: skip
        if url == listener:
            return {"status": "ok"}  # anything but a peer
        return honest(url, route, params, timeout)

    client = create_app(config, transport=answer).test_client()
    assert client.post("/register", json={"url": member}).status_code == 200
    for url in (outsider, listener, "http://10.0.0.8:1"):
        resp = client.post("/register", json={"url": url})
        assert resp.status_code == 400, url
    known = {p["url"]: p["name"] for p in client.get("/peers").get_json()["peers"]}
    assert known[member] == "peer5"
    assert {outsider, listener, "http://10.0.0.8:1"}.isdisjoint(known)


def test_the_name_kept_is_the_proven_one_and_friends_are_never_renamed(peer_config):
    from peer_app import create_app

    primary = peer_config.friends["primary"]
    elsewhere = "http://10.0.0.5:9003"
    transport = FakePeers({elsewhere: "peer2", "http://10.0.0.6:9003": "peer6", primary.rest_url: "peer2"})
    client = create_app(peer_config, transport=transport).test_client()
    # a friend's URL under another name: nothing changes
    assert client.post("/register", json={"url": primary.rest_url, "name": "peer1"}).status_code == 200
    # a claimed name that the URL does not prove
    assert client.post("/register", json={"url": "http://10.0.0.6:9003", "name": "peer2"}).status_code == 400
    # someone proving a friend's name at another address does not replace the friend
    assert client.post("/register", json={"url": elsewhere}).status_code == 400
    peers = client.get("/peers").get_json()["peers"]
    assert [(p["name"], p["url"], p["role"]) for p in peers] == [
        ("peer2", primary.rest_url, "primary"),
        ("peer3", peer_config.friends["backup"].rest_url, "backup"),
    ]


def test_learned_peers_are_capped(peer_config):
    from peer_app import create_app

    config = dataclasses.replace(peer_config, settings=dataclasses.replace(peer_config.settings, max_learned_peers=2))
    urls = {f"http://10.0.0.{i}:9003": f"peer{i + 10}" for i in range(3)}
    client = create_app(config, transport=FakePeers(urls)).test_client()
    codes = [client.post("/register", json={"url": url}).status_code for url in urls]
    assert codes == [200, 200, 503]
    assert client.post("/register", json={"url": "http://10.0.0.0:9003"}).status_code == 200  # known: re-verified


def test_info_proves_membership_for_a_challenge(peer_config, secret_file, secret):
    from peer_app import create_app

    client = create_app(with_security(peer_config, secret_file)).test_client()
    info = client.get("/info?challenge=abcdefghijklmnop").get_json()
    assert Guard(secret).proves("peer1", peer_config.rest_url, "abcdefghijklmnop", info["proof"])
    assert "proof" not in client.get("/info").get_json()


def test_bootstrap_learns_only_the_listed_peers_that_prove_themselves(peer_config, secret_file, secret, monkeypatch):
    from peer_app import create_app

    friends = {f.rest_url: f.name for f in peer_config.friends.values()}
    listed = [{"url": "http://10.0.0.5:9003"}, {"url": "http://10.0.0.7:80/steal?x=1"}, {"url": "http://10.0.0.8:1"},
              {"url": "nonsense"}, "nonsense"]  # fmt: skip
    transport = FakePeers({**friends, "http://10.0.0.5:9003": "peer5"}, guard=Guard(secret))

    def answer(url, route, params, timeout):
        return transport(url, route, params, timeout)

    client = create_app(with_security(peer_config, secret_file), transport=answer).test_client()
    from client import api

    def friend_answers(self, payload):  # each friend lists peers, honest or not
        return {"status": "registered", "name": friends[self.url], "peers": listed}

    monkeypatch.setattr(api.Peer, "register", friend_answers)
    body = client.post("/bootstrap").get_json()
    assert [f["ok"] for f in body["friends"]] == [True, True]
    urls = [p["url"] for p in client.get("/peers").get_json()["peers"]]
    assert urls == [*friends, "http://10.0.0.5:9003"]


def test_a_lying_or_malformed_answer_is_dropped_counted_and_never_replaces_ours(peer_config):
    from peer_app import create_app

    primary, backup = (f.rest_url for f in peer_config.friends.values())
    lie = {"results": [{"file": "archivo1.txt", "peer": "peer1", "rest_url": "http://evil:1",
                        "grpc_address": "evil:2", "size": 1, "sha256": SHA}], "visited": [], "messages": 0}  # fmt: skip
    nonsense = {"results": [], "visited": [], "messages": "x"}
    asked = []

    def transport(url, route, params, timeout):
        asked.append(url)
        return lie if url == primary else nonsense

    client = create_app(peer_config, transport=transport).test_client()
    resp = client.get("/search?query=archivo")
    assert resp.status_code == 200
    assert [(r["peer"], r["grpc_address"]) for r in resp.get_json()["results"]] == [("peer1", peer_config.grpc_address)]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert metric_value(metrics, "p2p_remote_answers_dropped_total", reason="impersonation") == 1
    assert metric_value(metrics, "p2p_remote_answers_dropped_total", reason="malformed") == 1
    assert sorted(asked) == sorted([primary, backup])  # both friends were asked, once each


# --- gRPC ----------------------------------------------------------------------------------------


@pytest.fixture
def guarded_grpc(peer_config, secret_file, serve, stub_for):
    """start(**security): a stub of a gRPC server that trusts no address (so loopback callers are strangers)."""

    def start(**fields):
        address, _ = serve(config=with_security(peer_config, secret_file, trusted_networks=(), **fields))
        return stub_for(address)

    return start


def _upload(stub, name: str, data: bytes, metadata=None):
    sha = hashlib.sha256(data).hexdigest()
    first = transfer_pb2.FileChunk(filename=name, data=data, size=len(data), sha256=sha, overwrite=True)
    return stub.Upload(iter([first]), timeout=10, metadata=metadata)


def test_upload_needs_a_member_and_says_unauthenticated(guarded_grpc, peer_config, secret):
    stub = guarded_grpc()
    with pytest.raises(grpc.RpcError) as err:
        _upload(stub, "archivo1.txt", b"evil")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert type(from_rpc_error(err.value)) is Unauthorized
    with pytest.raises(grpc.RpcError) as err:
        stub.DummyUpload(iter([transfer_pb2.FileChunk(data=b"x")]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (Path(peer_config.shared_dir) / "archivo1.txt").read_text() == "hola\n"
    assert _upload(stub, "new.txt", b"mine", metadata=grpc_metadata(operator_token(secret))).ok
    assert _upload(stub, "peer.txt", b"mine", metadata=grpc_metadata(peer_token(secret, "peer1"))).ok


def test_another_peers_or_the_readers_credential_writes_nothing_here(guarded_grpc, peer_config, secret):
    stub = guarded_grpc()
    for token in (peer_token(secret, "peer2"), reader_token(operator_token(secret)), hop_token(secret, "peer1")):
        with pytest.raises(grpc.RpcError) as err:
            _upload(stub, "archivo1.txt", b"evil", metadata=grpc_metadata(token))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert type(from_rpc_error(err.value)) is Forbidden
        with pytest.raises(grpc.RpcError) as err:
            stub.DummyUpload(iter([transfer_pb2.FileChunk(data=b"x")]), timeout=10, metadata=grpc_metadata(token))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (Path(peer_config.shared_dir) / "archivo1.txt").read_text() == "hola\n"


def test_download_is_open_unless_read_members(guarded_grpc, secret):
    def first(stub, metadata=None):
        return next(iter(stub.Download(transfer_pb2.FileRequest(filename="archivo1.txt"), timeout=10,
                                       metadata=metadata))).data  # fmt: skip

    assert first(guarded_grpc()) == b"hola\n"
    members = guarded_grpc(read="members")
    with pytest.raises(grpc.RpcError) as err:
        first(members)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert first(members, grpc_metadata(peer_token(secret, "peer2"))) == b"hola\n"


def test_forbidden_maps_to_permission_denied_and_back():
    assert Forbidden.grpc_code == grpc.StatusCode.PERMISSION_DENIED and Forbidden.http_status == 403
    assert (Unauthorized.name, Forbidden.name, Unauthorized.exit_code, Forbidden.exit_code) == (
        "Unauthorized", "Forbidden", 7, 7
    )  # fmt: skip


# --- verifying an offered URL --------------------------------------------------------------------


def test_membership_answers_anyone_with_only_who_the_peer_is(peer_config, secret_file, secret):
    from peer_app import create_app

    client = create_app(with_security(peer_config, secret_file, read="members")).test_client()
    resp = client.get("/membership?challenge=abcdefghijklmnop", environ_base=STRANGER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"name", "rest_url", "grpc_address", "challenge", "proof"}  # no files, friends, folder
    assert Guard(secret).proves("peer1", peer_config.rest_url, "abcdefghijklmnop", body["proof"])
    assert client.get("/membership", environ_base=STRANGER).status_code == 400
    assert client.get("/membership?challenge=" + "x" * 129, environ_base=STRANGER).status_code == 400
    assert client.get("/info?challenge=abcdefghijklmnop", environ_base=STRANGER).status_code == 401  # still a read


def test_verifying_an_offered_url_shows_that_address_no_credential(peer_config, secret_file, secret):
    """Under read: members the verification showed the read credential to any URL a member offered."""
    import http.server
    import threading

    from peer_app import create_app

    shown: list[tuple[str, str | None]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            shown.append((self.path.split("?")[0], self.headers.get("Authorization")))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = create_app(with_security(peer_config, secret_file, read="members")).test_client()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        resp = client.post("/register", json={"url": url}, headers=auth(operator_token(secret)))
        assert resp.status_code == 400  # not a member
    finally:
        server.shutdown()
        server.server_close()
    assert shown == [("/membership", None)]
