"""/metrics: Prometheus text from the Maestro and every peer, summed over gunicorn workers."""

from __future__ import annotations

import grpc
import pytest

from common import transfer_pb2, transfer_pb2_grpc
from common.rpc import CHANNEL_OPTIONS
from maestro_app import create_app as create_maestro
from peer_app import create_app as create_peer
from peer_app.grpc_server import create_server
from tests.support import metric_value as value


def test_maestro_metrics_count_requests_by_endpoint_method_and_status(maestro):
    for _ in range(3):
        maestro.get("/locate?file=nothing.txt")
    maestro.get("/locate")
    text = maestro.get("/metrics").get_data(as_text=True)
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="404") == 3
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="400") == 1
    assert value(text, "p2p_http_request_duration_seconds_count", endpoint="/locate", method="GET", status="404") == 3


def test_maestro_metrics_gauge_registered_and_alive_peers(maestro):
    body = {
        "name": "p1",
        "rest_url": "http://127.0.0.1:1",
        "grpc_address": "127.0.0.1:2",
        "files": [{"name": "a.txt", "size": 1, "mtime": 1.0, "sha256": "a" * 64}],
    }
    assert maestro.post("/register", json=body).status_code == 200
    text = maestro.get("/metrics").get_data(as_text=True)
    assert value(text, "p2p_peers_registered") == 1
    assert value(text, "p2p_peers_alive") == 1
    assert value(text, "p2p_files_registered") == 1


def test_transfer_bytes_counted_by_the_grpc_server_show_on_the_peer_metrics(peer_config):
    """The gRPC process counts each call's bytes into SQLite; the REST app's /metrics reads them."""
    client = create_peer(peer_config).test_client()
    server, port, _ = create_server(peer_config, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            stub = transfer_pb2_grpc.FileTransferStub(channel)
            got = b"".join(c.data for c in stub.Download(transfer_pb2.FileRequest(filename="archivo1.txt"), timeout=10))
            stub.DummyUpload(iter([transfer_pb2.FileChunk(data=b"abc")]), timeout=10)
            with pytest.raises(grpc.RpcError):  # a refused call counts as a call of 0 bytes
                list(stub.Download(transfer_pb2.FileRequest(filename="missing.txt"), timeout=10))
    finally:
        server.stop(None)
    text = client.get("/metrics").get_data(as_text=True)
    assert value(text, "p2p_transfer_bytes_total", rpc="Download", direction="sent") == len(got) == 5
    assert value(text, "p2p_transfer_bytes_total", rpc="DummyUpload", direction="received") == 3
    assert value(text, "p2p_transfers_total", rpc="Download", direction="sent") == 2
    assert value(text, "p2p_transfers_total", rpc="Upload", direction="received") == 0


def test_a_worker_boots_while_another_worker_is_creating_its_metrics_file(tmp_path, monkeypatch, maestro_config):
    # Another worker's file exists but is still empty: booting must not read it.
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    assert create_maestro(maestro_config).test_client().get("/health").status_code == 200
