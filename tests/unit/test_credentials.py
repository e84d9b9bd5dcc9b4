"""One credential type for the CLI, the launcher's probes and the nodes (common/credentials.py)."""

from __future__ import annotations

import dataclasses

import pytest

from client.api import call, rest_transport
from common.config import Friend, Security
from common.credentials import Credentials
from common.errors import Unavailable
from common.security import ensure_secret, hop_token, operator_token, peer_token, read_secret, reader_token
from control.health import get_json, grpc_healthy, maestro_peers, rest_healthy
from tests.support import recording_server

SECRET = b"0123456789abcdef0123456789abcdef-network-one"


@pytest.fixture
def unreadable_ca(tmp_path) -> Credentials:
    return Credentials(token="peer1.x", ca_file=str(tmp_path / "no-such-ca.pem"))


def test_an_unreadable_ca_file_is_one_error_for_rest_and_grpc_alike(unreadable_ca):
    with pytest.raises(Unavailable, match="cannot read the network's CA file .*no-such-ca.pem: no such file"):
        unreadable_ca.channel("127.0.0.1:1")
    with pytest.raises(Unavailable, match="cannot read the network's CA file .*no-such-ca.pem: no such file"):
        call("GET", "https://127.0.0.1:1/health", timeout=1, credentials=unreadable_ca)
    with pytest.raises(Unavailable, match="cannot read the network's CA file .*no-such-ca.pem: no such file"):
        rest_transport(unreadable_ca)  # a node's hops


def test_a_probe_with_an_unreadable_ca_file_fails_without_a_traceback(unreadable_ca):
    assert grpc_healthy("127.0.0.1:1", timeout=0.5, access=unreadable_ca) is False
    assert get_json("https://127.0.0.1:1/health", timeout=0.5, access=unreadable_ca) is None


@pytest.fixture
def recorder():
    """An HTTP server that answers every request with a p2pnet-like body: (url, calls)."""
    with recording_server(200, b'{"status": "ok", "peers": []}') as served:
        yield served


def shown(calls: list) -> list[tuple[str, str | None]]:
    """(path, Authorization) of each request the recorder saw."""
    return [(path, auth) for _, path, auth, _ in calls]


def test_probes_show_health_no_credential_and_reads_the_read_credential(recorder):
    url, seen = recorder
    reads = Credentials(token=reader_token(operator_token(SECRET)))
    assert rest_healthy(url, access=reads)
    assert maestro_peers(url, access=reads) == {}
    assert shown(seen) == [("/health", None), ("/peers", f"Bearer {reads.token}")]


@pytest.mark.parametrize("read", ["open", "members"])
def test_a_peer_shows_its_hop_credential_on_hops_never_its_own(make_config, tmp_path, recorder, read):
    from peer_app import create_app

    url, seen = recorder
    secret_file = tmp_path / ".p2p-secret"
    ensure_secret(secret_file)
    secret = read_secret(secret_file)
    config = make_config("peer", friends={"primary": Friend("peer2", url)})
    config = dataclasses.replace(
        config, security=Security(secret_file=str(secret_file), read=read, local_operator="any")
    )
    client = create_app(config).test_client()
    assert client.get("/search?query=song&ttl=2").status_code == 200
    assert client.get("/locate?file=song.mp3&ttl=2").status_code in (404, 503)
    hops = [auth for path, auth in shown(seen) if path.startswith(("/search", "/locate"))]
    assert len(hops) == 2 and set(hops) == {f"Bearer {hop_token(secret, 'peer1')}"}
    assert all(peer_token(secret, "peer1") not in str(auth) for _, auth in shown(seen))
