"""Which credential the CLI shows to whom, and what it checks of a holder (docs/security.md).

Least privilege, decided here and nowhere else:

- A read (locate, search, peers, a download's bytes) shows nothing where the topology says
  `read: open`; else the read credential, `@reader`: made from the operator's credential when
  that is what the user has, or the user's own reader credential. Any other credential (a
  peer's) is shown for a read only to the network's own nodes.
- A write (upload, dummy-upload) shows the user's credential only to the network's own nodes:
  the addresses the topology names and those the user typed. A peer's own credential may also
  go to the address the directory lists for that very peer, which only that credential writes.
  The operator's credential never goes to an address the directory or a member chose.
- With the network's secret (the operator's CLI, run from the network's folder), every holder of
  a download first proves that it is a member, named as the directory says, serving this very
  content (HolderCheck). Without the secret a client cannot check that: docs/security.md says
  what it relies on instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from common.credentials import Credentials
from common.errors import BadRequest, DataLoss
from common.security import OPERATOR, READER, holder_proves, new_challenge, principal_of, reader_token

if TYPE_CHECKING:
    from client.transfer import Content, TransferClient


def endpoint(target: str) -> str:
    """`host:port` of a URL or a HOST:PORT address (lowercase, IPv6 without brackets); "" when neither."""
    parts = urlsplit(target if "://" in target else "//" + target)
    try:
        port = parts.port
    except ValueError:
        return ""
    host = parts.hostname
    return f"{host}:{port}" if host and port else ""


class HolderCheck:
    """A holder proves it is the member the directory names, serving this content (needs the secret)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __call__(self, transfer: TransferClient, holder: str, file: str) -> Content:
        """What holder says file is, once it proved it; DataLoss naming the holder otherwise."""
        challenge = new_challenge()
        content = transfer.stat(file, challenge=challenge)
        if content.holder != holder or not holder_proves(
            self._secret, holder, file, content.size, content.sha256, content.blake3, challenge, content.proof
        ):
            raise DataLoss(
                f"{holder} at {transfer.address} did not prove that it is {holder}, a member of this network, "
                f"serving {file}: its directory entry may be forged, so nothing was fetched from it"
            )
        return content


@dataclass(frozen=True)
class Keys:
    """The user's credential and where each kind of call may show it."""

    token: str | None = None  # the user's credential: given, or the operator's from the topology's secret
    ca_file: str | None = None  # the network's CA (TLS), else None
    reads_open: bool = False  # the topology says `read: open`: reads show nothing
    own: frozenset[str] = frozenset()  # endpoints of the network's own nodes: the topology's, the user's
    peers: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # the topology's peers: name -> (REST, gRPC)
    secret: bytes | None = None  # the network's secret, when this user can read it: holders prove themselves

    @property
    def principal(self) -> str | None:
        return principal_of(self.token)

    def with_own(self, targets: Iterable[str]) -> Keys:
        """These keys, with targets (URLs or HOST:PORT addresses the user chose) counted as the network's own."""
        return replace(self, own=self.own | {e for e in map(endpoint, targets) if e})

    def is_own(self, target: str) -> bool:
        return endpoint(target) in self.own

    def read_token(self) -> str | None:
        """The credential a read shows to any node: None under `read: open` or without a read credential."""
        if self.reads_open or not self.token:
            return None
        principal = self.principal
        if principal == OPERATOR:
            return reader_token(self.token)
        return self.token if principal == READER else None

    def read(self, target: str) -> Credentials:
        """What a read at target (a URL or HOST:PORT) shows."""
        token = self.read_token()
        if token is None and self.token and not self.reads_open and self.principal != OPERATOR and self.is_own(target):
            token = self.token  # a peer's credential: to the network's own nodes only
        return Credentials(token, self.ca_file)

    def write(self, peer: Mapping[str, str]) -> Credentials:
        """What a write to peer ({"name", "grpc_address"}) shows; BadRequest where the credential may not go."""
        address = peer["grpc_address"]
        if not self.token or self.is_own(address) or self.principal == peer.get("name"):
            return Credentials(self.token, self.ca_file)
        whose = "the operator's credential" if self.principal == OPERATOR else "your credential"
        raise BadRequest(
            f"{peer.get('name')} is at {address}, an address from the Maestro's directory that this network's "
            f"topology does not name: {whose} does not go there; name the peer by its REST URL "
            "(--to http://HOST:PORT) to send it anyway"
        )

    def holder_check(self) -> HolderCheck | None:
        """How a download checks its holders: None without the network's secret."""
        return None if self.secret is None else HolderCheck(self.secret)

    def for_maestro(self, url: str, topology_maestro: str | None, explicit: bool) -> Keys:
        """These keys for a run that asks the Maestro at url, which the user may have named.

        A topology found in the current folder (not named by --topology or $P2P_TOPOLOGY) whose
        Maestro is another one describes another network: its nodes are not this network's own,
        its read rule and its secret say nothing about these holders. Only the credential (and
        the CA) stay, as the user's.
        """
        if explicit or topology_maestro is None or endpoint(url) == endpoint(topology_maestro):
            return self.with_own([url])
        return Keys(self.token, self.ca_file).with_own([url])
