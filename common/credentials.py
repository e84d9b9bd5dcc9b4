"""What a caller presents to a p2pnet node: a credential (or none), and the CA it trusts for TLS.

One type for every caller: the CLI (client/keys.py decides which credential goes where), the
launcher's probes (control/health.py) and the nodes themselves (a peer's own credential for
its registration and introductions, its hop credential for search hops, the read credential for
verifications and /ui/search). An
unreadable CA file is one error everywhere: Unavailable naming the file (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.config import NodeConfig
from common.errors import Unavailable
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

    def roots(self) -> bytes | None:
        """The CA's certificates (None without TLS); Unavailable naming the file when it cannot be read."""
        if not self.ca_file:
            return None
        try:
            with open(self.ca_file, "rb") as fh:
                return fh.read()
        except OSError as err:
            raise Unavailable(
                f"cannot read the network's CA file {self.ca_file}: {(err.strerror or str(err)).lower()}"
            ) from None

    def channel(self, address: str, options: list | tuple = ()) -> grpc.Channel:
        """A gRPC channel to address: TLS verified against the CA when there is one."""
        import grpc

        roots = self.roots()
        if roots is None:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=roots), options=list(options)
        )

    def without_token(self) -> Credentials:
        """The same CA, no credential: what a call that needs none presents."""
        return Credentials(None, self.ca_file) if self.token else self

    @classmethod
    def of_node(cls, config: NodeConfig, guard: Guard) -> Credentials:
        """What a node presents where it acts as itself: its own name's credential, its network's CA."""
        return cls(token=guard.credential(config.name), ca_file=node_ca(config))

    @classmethod
    def hops_of_node(cls, config: NodeConfig, guard: Guard) -> Credentials:
        """What a peer presents on the search and locate hops it sends: its hop credential (reads, names the sender)."""
        return cls(token=guard.hop_credential(), ca_file=node_ca(config))

    @classmethod
    def reads_of_node(cls, config: NodeConfig, guard: Guard) -> Credentials:
        """What a node presents where it only reads (verifications, /ui/search): the read credential, if needed."""
        return cls(token=guard.read_credential(), ca_file=node_ca(config))


def node_ca(config: NodeConfig) -> str | None:
    """The CA file a node verifies others with (None without TLS)."""
    return str(node_files(config.security.tls_dir, config.name).ca) if config.security.tls else None


NONE = Credentials()
