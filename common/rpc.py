"""gRPC channel settings both ends share: the message size and the keepalive pings."""

from __future__ import annotations

from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import transfer_pb2

# "p2pnet.FileTransfer": the full service name, for the health service and the interceptor.
FILE_TRANSFER = transfer_pb2.DESCRIPTOR.services_by_name["FileTransfer"].full_name
MAX_MESSAGE = 16 * 1024 * 1024
# Shared by servers and clients: big messages, and HTTP/2 pings so a peer that vanished
# (host down, process stopped) is noticed within keepalive_time + keepalive_timeout.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


class HealthStub(Protocol):
    """grpc_health's client stub as it is: the published type stubs leave its two methods out."""

    Check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


def health_stub(channel: grpc.Channel) -> HealthStub:
    """The gRPC health service's stub on channel (one place for the typing the stubs lack)."""
    return health_pb2_grpc.HealthStub(channel)  # type: ignore[return-value]
