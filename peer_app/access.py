"""Who may call which RPC of a peer (docs/security.md): the per-RPC policy and its link of the gRPC chain.

CredentialCheck comes before admission in the chain (peer_app/grpc_server.py): it refuses a
caller that needs a credential and has none (UNAUTHENTICATED) before the call takes a slot or
reads a single message, and names the authenticated caller on the call's record
(RpcCall.caller, read by servicers through peer_app.interceptor.current_call()). The REST
side's twin is common.web.install_guard; both ask common.security.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import grpc

from common.local_owner import socket_owner
from common.security import METADATA_KEY, MUTATING, OPEN, READ, Guard
from peer_app.interceptor import CallInterceptor, RpcCall

# Writes need a member; reads need one only with `read: members`. An RPC missing here is
# treated as MUTATING, so a new RPC is closed until someone decides otherwise.
RPC_POLICY = {
    "p2pnet.FileTransfer/Upload": MUTATING,
    "p2pnet.FileTransfer/DummyUpload": MUTATING,
    "p2pnet.FileTransfer/Download": READ,
    "p2pnet.FileTransfer/DummyDownload": READ,
    "p2pnet.FileTransfer/OpenLane": READ,  # the fast lane (docs/protocol.md): a ticket to read a file
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


def peer_address(peer: str) -> tuple[str, int] | None:
    """The caller's (IP, port) from gRPC's peer string ("ipv4:10.0.0.2:5000", "ipv6:[::1]:5000"), else None."""
    family, _, rest = unquote(peer).partition(":")
    if family not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)) if host and port.isdigit() else None


def peer_ip(peer: str) -> str | None:
    """The caller's IP from gRPC's peer string, else None."""
    address = peer_address(peer)
    return address[0] if address else None


class CredentialCheck(CallInterceptor):
    """Refuses a call whose caller is neither the operator by its address nor holding a valid credential.

    A caller on this machine is known by the account that made its connection, asked of the
    kernel on each call that needs it (grpc names the caller's address and port, not the
    connection, so nothing is cached: a port may be reused by another account). The call's
    other end is this server's port at one of hosts; the caller's own address comes first,
    which is where a local client connects to in practice.
    """

    def __init__(self, guard: Guard, hosts: Iterable[str] = ("127.0.0.1", "::1")) -> None:
        self.guard = guard
        self.hosts = tuple(dict.fromkeys(hosts))
        self.port = 0  # the server's port, set once it is bound

    def owner(self, peer: str) -> int | None:
        """The uid that made the caller's connection, when it is on this machine; None when unknown."""
        client = peer_address(peer)
        if client is None or not self.port:
            return None
        hosts = dict.fromkeys((client[0], *self.hosts))
        return socket_owner(client, [(host, self.port) for host in hosts])

    @contextmanager
    def around(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        kind = rpc_kind(call.service, call.method)
        if self.guard.needs_credential(kind):
            token = call.metadata.get(METADATA_KEY)
            peer = call.peer
            caller = self.guard.caller(
                peer_ip(peer), token if isinstance(token, str) else None, lambda: self.owner(peer)
            )
            call.caller = caller.name
        yield
