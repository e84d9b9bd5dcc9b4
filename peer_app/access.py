"""Who may call which RPC of a peer (SPEC §8): the per-RPC policy and its link of the gRPC chain.

CredentialCheck comes before admission in the chain (peer_app/grpc_server.py): it refuses a
caller that needs a credential and has none (UNAUTHENTICATED) before the call takes a slot or
reads a single message, and names the authenticated caller on the call's record
(RpcCall.caller, read by servicers through peer_app.interceptor.current_call()). The REST
side's twin is common.web.install_guard; both ask common.security.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import grpc

from common.security import METADATA_KEY, MUTATING, OPEN, READ, Guard
from peer_app.interceptor import CallInterceptor, RpcCall

# Writes need a member; reads need one only with `read: members`. An RPC missing here is
# treated as MUTATING, so a new RPC is closed until someone decides otherwise.
RPC_POLICY = {
    "p2pnet.FileTransfer/Upload": MUTATING,
    "p2pnet.FileTransfer/DummyUpload": MUTATING,
    "p2pnet.FileTransfer/Download": READ,
    "p2pnet.FileTransfer/DummyDownload": READ,
    "p2pnet.FileTransfer/OpenLane": READ,  # issue 13's fast lane: a ticket to read a file
}
SERVICE_POLICY = {
    "grpc.health.v1.Health": OPEN,  # liveness probes (launcher, Kubernetes) answer anyone
    "grpc.reflection.v1.ServerReflection": READ,
    "grpc.reflection.v1alpha.ServerReflection": READ,
}


def rpc_kind(service: str, method: str) -> str:
    """OPEN, READ or MUTATING for one RPC."""
    kind = RPC_POLICY.get(f"{service}/{method}")
    if kind is None:
        kind = SERVICE_POLICY.get(service, MUTATING)
    return kind


def peer_ip(peer: str) -> str | None:
    """The caller's IP from gRPC's peer string ("ipv4:10.0.0.2:5000", "ipv6:[::1]:5000"), else None."""
    family, _, rest = unquote(peer).partition(":")
    if family == "ipv4":
        return rest.rpartition(":")[0] or None
    if family == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


class CredentialCheck(CallInterceptor):
    """Refuses a call whose caller is neither at a trusted address nor holding a valid credential."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    @contextmanager
    def around(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        kind = rpc_kind(call.service, call.method)
        if self.guard.needs_credential(kind):
            token = call.metadata.get(METADATA_KEY)
            call.caller = self.guard.caller(peer_ip(call.peer), token if isinstance(token, str) else None).name
        yield
