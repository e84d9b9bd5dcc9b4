"""What a client presents to a p2pnet network: its credential, and the CA it trusts for TLS.

The CLI builds one from --token / $P2P_TOKEN or the topology it finds (client/topology.py);
a peer builds its own from its node config (its name's credential), so every call a peer
makes carries who it is, on loopback or across hosts alike (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.config import NodeConfig
from common.security import Guard, bearer, grpc_metadata
from common.tls import node_files

if TYPE_CHECKING:  # grpc is imported only when a channel is made (the CLI's locate never speaks gRPC)
    import grpc


@dataclass(frozen=True)
class Credentials:
    """A token (or none) for every call, and a CA file (or none: plain HTTP and gRPC)."""

    token: str | None = None
    ca_file: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return grpc_metadata(self.token) or None

    @property
    def verify(self) -> str | bool:
        """requests' `verify`: the network's CA when there is one, else the system's."""
        return self.ca_file or True

    def channel(self, address: str, options: list) -> grpc.Channel:
        """A gRPC channel to address: TLS verified against the CA when there is one."""
        import grpc

        if not self.ca_file:
            return grpc.insecure_channel(address, options=options)
        with open(self.ca_file, "rb") as fh:
            roots = fh.read()
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots), options=options)

    @classmethod
    def of_node(cls, config: NodeConfig, guard: Guard) -> Credentials:
        """What a node presents when it calls others: its own name's credential, its network's CA."""
        ca = str(node_files(config.security.tls_dir, config.name).ca) if config.security.tls else None
        return cls(token=guard.credential(config.name), ca_file=ca)


NONE = Credentials()
