"""/metrics: Prometheus text from the Maestro and every peer, summed over gunicorn workers."""

from __future__ import annotations

import os
import re
from concurrent import futures

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common import transfer_pb2, transfer_pb2_grpc
from common.config import NodeConfig, Settings
from common.gunicorn_conf import metrics_dir
from common.rpc import CHANNEL_OPTIONS
from maestro_app import create_app as create_maestro
from peer_app import create_app as create_peer
from peer_app.grpc_server import create_server
from tests.support import wait_until


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, from Prometheus text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def maestro_client(tmp_path):
    config = NodeConfig(role="maestro", name="maestro", host="127.0.0.1", rest_port=1, run_dir=str(tmp_path))
    return create_maestro(config).test_client()


def test_maestro_metrics_count_requests_by_endpoint_method_and_status(maestro_client):
    for _ in range(3):
        maestro_client.get("/locate?file=nothing.txt")
    maestro_client.get("/locate")
    text = maestro_client.get("/metrics").get_data(as_text=True)
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="404") == 3
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="400") == 1
    assert value(text, "p2p_http_request_duration_seconds_count", endpoint="/locate", method="GET", status="404") == 3


def test_maestro_metrics_gauge_registered_and_alive_peers(maestro_client):
    body = {
        "name": "p1",
        "rest_url": "http://127.0.0.1:1",
        "grpc_address": "127.0.0.1:2",
        "files": [{"name": "a.txt", "size": 1}],
    }
    assert maestro_client.post("/register", json=body).status_code == 200
    text = maestro_client.get("/metrics").get_data(as_text=True)
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


@pytest.mark.e2e
def test_metrics_sum_requests_over_two_gunicorn_workers(network):
    nodes = network(
        ["peer1", "peer2"],
        settings=Settings(heartbeat_interval=0.5, request_timeout=1.0, rest_workers=2, rest_threads=2),
    )
    maestro, peer = nodes["maestro"].url, nodes["peer1"].url

    def hit(url: str) -> int:
        s = requests.Session()
        for _ in range(10):
            s.get(url + "/locate", params={"file": "missing.txt"}, timeout=5)
        return 10

    # Many connections at once, so both workers answer some of them.
    with futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hit, [maestro] * 8)) == 80
        assert (
            sum(
                pool.map(
                    lambda _: requests.get(peer + "/search", params={"query": "zzz", "ttl": 1}, timeout=5).status_code,
                    range(12),
                )
            )
            == 200 * 12
        )
    folder = metrics_dir(nodes["maestro"].config.run_dir, "maestro")
    writers = {re.sub(r"\D", "", n) for n in os.listdir(folder)}
    assert len(writers) >= 2, f"one worker answered everything: {os.listdir(folder)}"
    text = requests.get(maestro + "/metrics", timeout=5).text
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="404") == 80
    wait_until(
        lambda: value(requests.get(maestro + "/metrics", timeout=5).text, "p2p_peers_alive") == 2,
        what="both peers alive in the Maestro gauges",
    )
    peer_text = requests.get(peer + "/metrics", timeout=5).text
    assert value(peer_text, "p2p_search_handled_total") == 12
    assert value(peer_text, "p2p_http_requests_total", endpoint="/search", method="GET", status="200") == 12


def test_a_worker_boots_while_another_worker_is_creating_its_metrics_file(tmp_path, monkeypatch):
    # Another worker's file exists but is still empty: booting must not read it.
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    config = NodeConfig(role="maestro", name="maestro", host="127.0.0.1", rest_port=1, run_dir=str(tmp_path / "run"))
    assert create_maestro(config).test_client().get("/health").status_code == 200
