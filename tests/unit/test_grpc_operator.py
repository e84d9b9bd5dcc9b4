"""What an operator gets from a peer's gRPC server: reflection for generic tools, a log line per transfer."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from common import transfer_pb2, transfer_pb2_grpc
from common.rpc import CHANNEL_OPTIONS, health_stub
from peer_app.grpc_server import create_server
from tests.support import wait_until


@pytest.fixture
def channel(peer_config):
    server, port, _ = create_server(peer_config, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    yield channel
    channel.close()
    server.stop(None)


def test_reflection_lets_a_tool_without_the_proto_list_and_call_the_services(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"p2pnet.FileTransfer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    # Everything below comes from the server, as grpcurl would get it: no transfer_pb2.
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("p2pnet.FileTransfer")
    assert {m.name for m in service.methods} >= {"Download", "Upload", "DummyDownload", "DummyUpload"}
    method = service.methods_by_name["Download"]
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_stream(
        "/p2pnet.FileTransfer/Download",
        request_serializer=request_class.SerializeToString,
        response_deserializer=reply_class.FromString,
    )
    chunks = list(call(request_class(filename="archivo1.txt"), timeout=10))
    assert b"".join(c.data for c in chunks) == b"hola\n"


def test_each_transfer_call_leaves_one_line_in_the_log(channel, caplog):
    caplog.set_level(logging.INFO, logger="p2pnet.transfers")
    stub = transfer_pb2_grpc.FileTransferStub(channel)
    assert b"".join(c.data for c in stub.Download(transfer_pb2.FileRequest(filename="archivo1.txt"), timeout=10))
    list(stub.Download(transfer_pb2.FileRequest(filename="archivo1.txt", offset=1, length=3), timeout=10))
    with pytest.raises(grpc.RpcError):
        list(stub.Download(transfer_pb2.FileRequest(filename="missing.txt"), timeout=10))
    stub.DummyUpload(iter([transfer_pb2.FileChunk(data=bytes(2048))]), timeout=10)
    health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)  # not a transfer

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "p2pnet.transfers"]

    wait_until(lambda: len(lines()) == 4, what="four transfer lines")
    whole, ranged, missing, dummy = lines()
    assert whole.startswith("Download archivo1.txt: 5 B in ") and " to ipv4:127.0.0.1:" in whole
    assert ranged.endswith("(bytes 1-3)") and ranged.startswith("Download archivo1.txt: 3 B in ")
    assert missing.startswith("Download missing.txt: failed after 0 B in ") and ": not_found: " in missing
    assert dummy.startswith("DummyUpload -: 2.00 KiB in ") and " from ipv4:127.0.0.1:" in dummy
    assert all(line.split()[0] in ("Download", "DummyUpload") for line in lines())
