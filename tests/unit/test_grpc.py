"""The FileTransfer servicer, in-process on port 0."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from contextlib import contextmanager

import grpc
import pytest

from common import transfer_pb2, transfer_pb2_grpc
from common.errors import BadRequest, Unauthorized, from_rpc_error
from common.rpc import CHANNEL_OPTIONS, health_stub
from peer_app.grpc_server import create_server
from peer_app.interceptor import CallInterceptor, RpcCall
from tests.support import wait_until
from tests.unit.test_names import HOSTILE


@pytest.fixture
def grpc_peer(peer_config):
    uploaded: list = []
    server, port, _ = create_server(peer_config, "127.0.0.1:0", on_upload=uploaded.append)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    yield transfer_pb2_grpc.FileTransferStub(channel), uploaded
    channel.close()
    server.stop(None)


def download(stub, name, **kw) -> bytes:
    chunks = stub.Download(transfer_pb2.FileRequest(filename=name, **kw), timeout=10)
    return b"".join(c.data for c in chunks)


def upload(stub, name, data, chunk=1000, **first):
    first.setdefault("sha256", hashlib.sha256(data).hexdigest())

    def chunks():
        yield transfer_pb2.FileChunk(filename=name, data=data[:chunk], size=len(data), **first)
        for i in range(chunk, len(data), chunk):
            yield transfer_pb2.FileChunk(data=data[i : i + chunk])

    return stub.Upload(chunks(), timeout=10)


def test_download_streams_the_file_in_chunks(grpc_peer, peer_config):
    stub, _ = grpc_peer
    data = os.urandom(300_000)
    with open(os.path.join(peer_config.shared_dir, "big.bin"), "wb") as fh:
        fh.write(data)
    chunks = list(stub.Download(transfer_pb2.FileRequest(filename="big.bin", chunk_size=65536), timeout=10))
    assert len(chunks) == 5
    assert b"".join(c.data for c in chunks) == data
    assert chunks[0].sha256 == hashlib.sha256(data).hexdigest()


def test_download_of_a_range(grpc_peer):
    stub, _ = grpc_peer
    assert download(grpc_peer[0], "archivo1.txt", offset=1, length=3) == b"ola"
    assert download(stub, "archivo1.txt", offset=4) == b"\n"


def test_download_of_unknown_file_is_not_found(grpc_peer):
    with pytest.raises(grpc.RpcError) as err:
        download(grpc_peer[0], "missing.txt")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", [n for _, n in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_download_names_are_refused(grpc_peer, name):
    with pytest.raises(grpc.RpcError) as err:
        download(grpc_peer[0], name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("name", [n for _, n in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_upload_names_write_nothing(grpc_peer, tmp_path, name):
    before = sorted(p for p in tmp_path.rglob("*") if "run" not in p.parts)
    with pytest.raises(grpc.RpcError) as err:
        upload(grpc_peer[0], name, b"evil")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(p for p in tmp_path.rglob("*") if "run" not in p.parts) == before


def test_symlink_leading_outside_is_permission_denied(grpc_peer, peer_config, tmp_path):
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", os.path.join(peer_config.shared_dir, "leak.txt"))
    with pytest.raises(grpc.RpcError) as err:
        download(grpc_peer[0], "leak.txt")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        upload(grpc_peer[0], "leak.txt", b"overwrite the secret", overwrite=True)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (tmp_path / "secret.txt").read_text() == "top secret"


def test_upload_lands_atomically_and_announces_itself(grpc_peer, peer_config):
    stub, uploaded = grpc_peer
    data = os.urandom(10_000)
    status = upload(stub, "new.bin", data, sha256=hashlib.sha256(data).hexdigest())
    assert status.ok and status.size == len(data)
    assert open(os.path.join(peer_config.shared_dir, "new.bin"), "rb").read() == data
    assert uploaded == ["new.bin"]
    assert not [n for n in os.listdir(peer_config.shared_dir) if n.startswith(".")]


def test_upload_with_wrong_hash_is_data_loss_and_leaves_nothing(grpc_peer, peer_config):
    with pytest.raises(grpc.RpcError) as err:
        upload(grpc_peer[0], "bad.bin", b"abc" * 1000, sha256="0" * 64)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert sorted(os.listdir(peer_config.shared_dir)) == ["archivo1.txt", "notes.md"]


def test_upload_does_not_replace_an_existing_file_unless_asked(grpc_peer, peer_config):
    stub, _ = grpc_peer
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, "archivo1.txt", b"replaced")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    upload(stub, "archivo1.txt", b"replaced", overwrite=True)
    assert open(os.path.join(peer_config.shared_dir, "archivo1.txt"), "rb").read() == b"replaced"


def test_dummy_download_streams_bytes_without_a_file(grpc_peer):
    stub = grpc_peer[0]
    chunks = stub.DummyDownload(transfer_pb2.FileRequest(length=2_500_000, chunk_size=1 << 20), timeout=10)
    assert sum(len(c.data) for c in chunks) == 2_500_000
    named = stub.DummyDownload(transfer_pb2.FileRequest(filename="archivo1.txt"), timeout=10)
    assert sum(len(c.data) for c in named) == 5


def test_dummy_upload_counts_and_drops(grpc_peer, peer_config):
    stub = grpc_peer[0]
    status = stub.DummyUpload(iter([transfer_pb2.FileChunk(data=b"x" * 1000)] * 7), timeout=10)
    assert status.size == 7000
    assert sorted(os.listdir(peer_config.shared_dir)) == ["archivo1.txt", "notes.md"]


def test_health_service_reports_serving(grpc_peer, peer_config):
    from grpc_health.v1 import health_pb2

    server, port, _ = create_server(peer_config, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = health_stub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)


def test_port_in_use_is_a_one_line_error(peer_config):
    import dataclasses
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = dataclasses.replace(peer_config, grpc_port=taken.getsockname()[1])
        with pytest.raises(SystemExit, match="cannot bind gRPC"):
            create_server(config)


class Recorder(CallInterceptor):
    """A link of the chain that keeps every call it saw start, and refuses calls to one method."""

    def __init__(self, refuse: str = "") -> None:
        self.calls: list[RpcCall] = []
        self.refuse = refuse

    @contextmanager
    def around(self, call, context):
        self.calls.append(call)
        if call.method == self.refuse:
            raise Unauthorized(f"{call.method} needs credentials")
        yield


@pytest.fixture
def chained(serve, stub_for):
    """start(recorder): a stub of an in-process server whose chain has the Recorder link."""

    def start(recorder: Recorder):
        address, _ = serve(interceptors=[recorder])
        return stub_for(address)

    return start


def ended(caplog, method: str) -> list[str]:
    """The log lines of the calls to method that ended (logged once every link has said how)."""
    lines = [r.getMessage() for r in caplog.records if r.name == "p2pnet.transfers"]
    return [line for line in lines if line.startswith(method + " ")]


def test_an_upload_cancelled_before_its_first_chunk_ends_without_a_server_error(chained, caplog):
    """A load test once saw tracebacks (an unbound name) when a client gave up before sending anything."""
    caplog.set_level(logging.INFO, logger="p2pnet.transfers")
    recorder = Recorder()
    stub = chained(recorder)
    gate = threading.Event()

    def nothing_yet():
        gate.wait(10)
        yield from ()

    call = stub.Upload.future(nothing_yet(), timeout=10)
    wait_until(lambda: [c for c in recorder.calls if c.method == "Upload"], what="the server to take the call")
    call.cancel()
    gate.set()
    wait_until(lambda: ended(caplog, "Upload"), what="the server's end")
    upload_call = next(c for c in recorder.calls if c.method == "Upload")
    # gRPC reports the cancel either as a cut stream or as a stream that ended empty
    assert upload_call.cut or isinstance(upload_call.error, BadRequest), upload_call
    assert upload_call.received == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert download(stub, "archivo1.txt") == b"hola\n"  # the server serves on


def test_a_link_of_the_chain_sees_each_call_with_its_bytes_and_can_refuse_one_by_name(chained, caplog):
    caplog.set_level(logging.INFO, logger="p2pnet.transfers")
    recorder = Recorder(refuse="DummyUpload")
    stub = chained(recorder)
    assert download(stub, "archivo1.txt", offset=1) == b"ola\n"
    with pytest.raises(grpc.RpcError) as err:
        stub.DummyUpload(iter([transfer_pb2.FileChunk(data=b"x")]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert type(from_rpc_error(err.value)) is Unauthorized
    wait_until(lambda: ended(caplog, "Download") and ended(caplog, "DummyUpload"), what="both calls ended")
    by_method = {c.method: c for c in recorder.calls}
    assert (by_method["Download"].sent, by_method["Download"].error) == (4, None)
    assert isinstance(by_method["DummyUpload"].error, Unauthorized)
    assert by_method["DummyUpload"].received == 0  # refused before its one message was read
