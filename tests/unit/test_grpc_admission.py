"""A peer's gRPC server under abuse, in-process: admission before the first read, idle and stall cuts,
health on its own threads. Each client here is its own connection, as separate processes would be."""

from __future__ import annotations

import hashlib
import logging
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from common import transfer_pb2
from common.errors import Busy, from_rpc_error
from common.rpc import CHANNEL_OPTIONS, health_stub
from tests.support import MiB, Silence, leftovers, wait_until

OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
def client(stub_for):
    """client(address): a stub on a connection of its own (a separate client)."""
    return lambda address: stub_for(address, own_connection=True)


@pytest.fixture
def serve(serve):
    """The shared serve fixture, with a 16 MiB big.bin to stream."""

    def start(**settings):
        address, shared = serve(**settings)
        (shared / "big.bin").write_bytes(os.urandom(16 * MiB))
        return address, shared

    return start


def serving(address: str) -> bool:
    """Health answers SERVING (a health check stuck behind the transfers would wait for their 30 s: it times out)."""
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
        answer = health_stub(channel).Check(health_pb2.HealthCheckRequest(service="p2pnet.FileTransfer"), timeout=5)
        return answer.status == health_pb2.HealthCheckResponse.SERVING


def read_all(stub, name: str = "archivo1.txt") -> bytes:
    return b"".join(c.data for c in stub.Download(transfer_pb2.FileRequest(filename=name), timeout=10))


def test_calls_beyond_a_connections_share_are_refused_at_once_without_reading(serve, client):
    address, _ = serve(max_concurrent_transfers=4, transfer_slots_per_connection=2, transfer_idle_timeout=30)
    silence = Silence()
    stub = client(address)
    calls = [stub.Upload.future(silence.stream(), timeout=30) for _ in range(6)]
    try:
        # Refused while their request streams have sent nothing (the silence's gate is shut): without reading.
        wait_until(lambda: sum(c.done() for c in calls) == 4, 10, what="four refusals")
        refused = [c for c in calls if c.done()]
        assert {type(from_rpc_error(c.exception())) for c in refused} == {Busy}
        assert "limit of 2 concurrent transfers per connection" in refused[0].exception().details()
        # Another client still gets in, and health answers at once.
        assert read_all(client(address)) == b"hola\n"
        assert serving(address)
    finally:
        silence.gate.set()


def test_idle_uploads_and_unread_downloads_are_cut_and_give_their_slots_back(serve, client, caplog):
    address, shared = serve(max_concurrent_transfers=2, transfer_slots_per_connection=0, transfer_idle_timeout=0.5)
    silence = Silence()
    attacker = client(address)
    upload = attacker.Upload.future(silence.stream(), timeout=30)
    download = attacker.Download(transfer_pb2.FileRequest(filename="big.bin"), timeout=30)
    download.initial_metadata()  # the server is sending; nobody reads
    with caplog.at_level(logging.INFO):

        def cut_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "cut by this peer" in r.getMessage()]

        try:
            wait_until(lambda: len(cut_lines()) == 2, 5, what="both calls cut by the server")
        finally:
            silence.gate.set()
        assert upload.exception(timeout=5).code() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.RpcError) as err:
            for _ in download:  # what the server had sent before the window filled, then the cut
                pass
        assert err.value.code() == grpc.StatusCode.CANCELLED
        # Both slots are free again (a moment after the cut): one client holds one while another reads.
        holders = []

        def hold_one() -> bool:
            call = client(address).Download(transfer_pb2.FileRequest(filename="big.bin"), timeout=30)
            call.initial_metadata()
            if call.is_active():  # admitted and streaming, not refused
                holders.append(call)
            return bool(holders)

        wait_until(hold_one, 3, what="one slot taken again")
        wait_until(lambda: read_all(client(address)) == b"hola\n", 3, what="the second slot")
        holders[0].cancel()
    cuts = cut_lines()
    assert len(cuts) == 2 and all("on one message (limit 0.5s)" in line for line in cuts), cuts
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert leftovers(shared) == []


def test_a_call_whose_request_never_comes_is_cut_too(serve, client):
    address, _ = serve(max_concurrent_transfers=1, transfer_idle_timeout=0.5)
    channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
    headers_only = channel.stream_stream(
        "/p2pnet.FileTransfer/Download",
        request_serializer=transfer_pb2.FileRequest.SerializeToString,
        response_deserializer=transfer_pb2.FileChunk.FromString,
    )
    silence = Silence()
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(headers_only(silence.stream(), timeout=10))
        assert err.value.code() == grpc.StatusCode.CANCELLED  # cut by the peer, not its own 10 s deadline
        # The only slot is free again (the handler gives it back a moment after the client saw the cut).
        wait_until(lambda: read_all(client(address)) == b"hola\n", 3, what="the slot back")
    finally:
        silence.gate.set()
        channel.close()


def test_a_trickling_upload_runs_out_of_its_stall_budget_and_nothing_is_kept(serve, client):
    address, shared = serve(
        transfer_idle_timeout=5, transfer_stall_timeout=1.0, transfer_min_rate=MiB, max_upload_bytes=MiB
    )

    def trickle():
        yield transfer_pb2.FileChunk(filename="slow.bin", data=b"x" * 10, size=1000, sha256="0" * 64)
        for _ in range(100):
            time.sleep(0.3)  # a client sending ten bytes at a time, well inside the idle limit
            yield transfer_pb2.FileChunk(data=b"x" * 10)

    with pytest.raises(grpc.RpcError) as err:
        client(address).Upload(trickle(), timeout=20)
    assert err.value.code() == grpc.StatusCode.CANCELLED  # cut by the peer, not the end of the trickle or 20 s
    wait_until(lambda: leftovers(shared) == [], 3, what="the cut upload's temporary file removed")
    assert not (shared / "slow.bin").exists()


def test_health_answers_at_once_while_transfers_are_full_and_flooded(serve, client):
    address, _ = serve(max_concurrent_transfers=2, transfer_slots_per_connection=0, transfer_idle_timeout=30)
    silence = Silence()
    stub = client(address)
    calls = [stub.Upload.future(silence.stream(), timeout=30) for _ in range(52)]  # 2 held, 50 refused
    watches = []
    try:
        for _ in range(12):  # more than the health threads: a watch holds none once it answered
            channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
            watches.append(health_stub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30))
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        assert all(serving(address) for _ in range(5))
        wait_until(lambda: sum(c.done() for c in calls) == 50, 5, what="the flood refused")
        assert {type(from_rpc_error(c.exception())) for c in calls if c.done()} == {Busy}
    finally:
        silence.gate.set()
        for watch in watches:
            watch.cancel()


def test_an_upload_is_not_cut_while_the_peer_stores_and_registers_it(serve, client):
    """After the last chunk the peer works (commit, re-registration): that is no idle client."""
    registering = []

    def slow_registration(name: str) -> None:
        registering.append(name)
        time.sleep(1.0)  # a Maestro slow to answer, twice the idle limit

    address, shared = serve(transfer_idle_timeout=0.5, on_upload=slow_registration)
    data = os.urandom(64 * 1024)
    first = transfer_pb2.FileChunk(
        filename="kept.bin", data=data, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    status = client(address).Upload(iter([first]), timeout=10)
    assert (status.filename, status.size) == ("kept.bin", len(data))
    assert registering == ["kept.bin"] and (shared / "kept.bin").read_bytes() == data
