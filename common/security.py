"""Members only: the network secret, credentials bound to principals, who may do what (docs/security.md).

The secret file is the root of trust. Every credential is derived from it, so nobody keeps a
user database: a credential is `PRINCIPAL.MAC`. The principals:

- a peer's name: MAC = HMAC-SHA256(secret, name); the peer acts as itself only: it changes its
  own files and its own directory entry, and introduces itself to other peers;
- `NAME/hop`: MAC = HMAC-SHA256(secret, "NAME/hop"); what peer NAME shows on the search hops it
  sends: it reads, and it names NAME as a hop's sender (peer_app/hops.py), nothing else: it
  writes nothing, so a friend that receives it can neither change NAME's files nor its entry;
- `@operator`: MAC = HMAC-SHA256(secret, "@operator"); may do whatever a user of the network
  does, but never vouches for a peer's directory entry (only that peer's own credential does);
- `@reader`: MAC = HMAC-SHA256(operator's credential, "@reader"); reads only. Derived from the
  operator's credential, so whoever holds that one makes this one and never has to show the
  operator's credential for a read.

`@` cannot start a peer's name and `/` is in none, so no peer can be named like a role or a
peer's hop credential. Whoever holds the secret (every node, the launcher, an operator who can
read the file) can mint and check any of them.

A caller that presents a valid credential is who that credential names, wherever it calls from.
A caller without one whose address is in `trusted_networks` (loopback by default) is the
operator, which keeps the classic curl commands (docs/operations.md) working on one machine.
When that caller is on this machine, `local_operator` also asks which account made its
connection: by default only the account that owns the secret file (and root, who can read it
anyway) is the operator; other local accounts need a credential like a stranger
(docs/security.md, "Who loopback trusts").
Everyone else must present `Authorization: Bearer CREDENTIAL` (HTTP) or the `authorization`
metadata (gRPC).

Pure Python: no Flask, no gRPC, so the client, the launcher and both servers share it cheaply.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from common.config import DEFAULT_TRUSTED_NETWORKS, LOCAL_OPERATOR_MODES, READ_MODES, Security
from common.errors import Forbidden, Unauthorized
from common.local_owner import is_own_address
from common.names import peer_name_problem
from common.net import parse_ip

DEFAULT_SECRET_FILE = ".p2p-secret"  # relative to the topology's folder
OPERATOR = "@operator"
READER = "@reader"
HOP = "/hop"  # NAME/hop: what peer NAME shows on the search hops it sends (reads, names the hop's sender)
TOKEN_ENV = "P2P_TOKEN"
TOKEN_FILE_ENV = "P2P_TOKEN_FILE"
METADATA_KEY = "authorization"  # gRPC metadata keys are lowercase
MIN_SECRET_CHARS = 32
NOT_A_MEMBER = "not a member of this network"

# What a request needs, per endpoint or RPC (the table is docs/security.md's "Least privilege").
OPEN = "open"  # anyone (health probes)
READ = "read"  # anyone with read: open; any valid credential with read: members
MUTATING = "mutating"  # the operator or a peer (whose view binds the name it acts as); never @reader
OWN = "own"  # changes this node's own files or entry: the operator, or this node's own credential

_CREDENTIAL_TAG = b"p2pnet credential v1\x00"
_READER_TAG = b"p2pnet reader v1\x00"
_PROOF_TAG = b"p2pnet proof v1\x00"
_HOLDER_TAG = b"p2pnet holder v1\x00"


class SecretError(Exception):
    """The secret file is missing, unreadable or too short."""


# --- the secret file -----------------------------------------------------------------------------


def secret_path(folder: str | os.PathLike, value: str | None = None) -> Path:
    """The secret file of a topology in folder: value (default .p2p-secret) relative to folder."""
    path = Path(value or DEFAULT_SECRET_FILE).expanduser()
    return path if path.is_absolute() else Path(folder) / path


def ensure_secret(path: str | os.PathLike) -> bool:
    """Create the secret file (mode 0600, 256 random bits) unless it exists; True if created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def read_secret(path: str | os.PathLike) -> bytes:
    """The secret in path (surrounding whitespace dropped), or SecretError saying what is wrong."""
    try:
        raw = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise SecretError(f"{path}: no such secret file (`launcher.py render` creates one)") from None
    except OSError as err:
        raise SecretError(f"{path}: cannot read the secret file: {err.strerror}") from None
    if len(raw) < MIN_SECRET_CHARS:
        raise SecretError(f"{path}: the secret must hold at least {MIN_SECRET_CHARS} characters")
    return raw


def loose_permissions(path: str | os.PathLike, what: str = "the network's secret") -> str | None:
    """A warning when others than the owner may read or write the file of what (the secret), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: {what} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
    return None


# --- credentials ---------------------------------------------------------------------------------


def _mac(secret: bytes, tag: bytes, *parts: str) -> str:
    message = tag + b"\x00".join(p.encode("utf-8") for p in parts)
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_for(secret: bytes, principal: str) -> str:
    """The credential of principal (a peer's name, or OPERATOR)."""
    return f"{principal}.{_mac(secret, _CREDENTIAL_TAG, principal)}"


def peer_token(secret: bytes, name: str) -> str:
    """Peer name's own credential: lets it act as itself only."""
    return token_for(secret, name)


def operator_token(secret: bytes) -> str:
    """The operator's credential: may do whatever a user of the network does."""
    return token_for(secret, OPERATOR)


def hop_token(secret: bytes, name: str) -> str:
    """Peer name's hop credential: reads, and names name as a search hop's sender; writes nothing."""
    return token_for(secret, name + HOP)


def hop_peer(principal: str | None) -> str | None:
    """The peer whose hop credential principal is (NAME/hop gives NAME), else None."""
    if not principal or not principal.endswith(HOP):
        return None
    name = principal[: -len(HOP)]
    return name if peer_name_problem(name) is None else None


def reader_token(operator: str) -> str:
    """The read-only credential, made from the operator's credential (not from the secret)."""
    return f"{READER}.{_mac(operator.encode('utf-8'), _READER_TAG, READER)}"


def principal_of(token: str | None) -> str | None:
    """The principal a credential claims to be (unchecked: only a node can check it)."""
    if not token:
        return None
    name, dot, _ = token.rpartition(".")
    return name if dot and name else None


def bearer(token: str | None) -> dict[str, str]:
    """HTTP headers that carry token (none when token is empty)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def grpc_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata that carries token (empty when token is empty)."""
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def _from_header(value: str | None) -> str | None:
    """The credential in an `Authorization: Bearer X` value, or None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Caller:
    """Who is asking: the operator (by credential or by a trusted address), the reader, or a peer by its name."""

    name: str
    trusted_address: bool = False
    keyless: bool = False  # the node has no secret: a trusted address is all anyone can show

    @property
    def is_operator(self) -> bool:
        return self.name == OPERATOR

    @property
    def is_peer(self) -> bool:
        """A peer by its own credential (not a role, not a peer's hop credential)."""
        return not self.name.startswith("@") and "/" not in self.name

    def require_self(self, name: object) -> None:
        """Forbidden unless this caller is the peer called name, by that peer's own credential.

        A peer's directory entry (its addresses and the digests of its files) is vouched for by
        that peer only: neither the operator's credential nor a trusted address writes it, so a
        leaked operator token or a page on the operator's machine cannot point a name at other
        bytes. In a network without a secret nobody can show a credential: trusted addresses may.
        """
        if self.keyless or (self.is_peer and self.name == name):
            return
        if self.is_peer:
            raise Forbidden(f"{self.name} may register and heartbeat only as itself, not as {name!r}")
        who = "a trusted address without a credential" if self.trusted_address and self.is_operator else self.name
        raise Forbidden(
            f"only the peer {name!r} itself, by its own credential, registers or heartbeats as {name!r}; {who} may not"
        )


def permits(kind: str, caller: Caller, node: str) -> None:
    """Forbidden unless caller may make a request of this kind at the node called node.

    OPEN and READ: any valid caller. MUTATING: the operator or a peer (the view then binds the
    name the peer acts as). OWN: the operator or node's own credential. The reader and a peer's
    hop credential only read.
    """
    if kind in (OPEN, READ) or caller.is_operator or caller.keyless:
        return
    if not caller.is_peer:
        raise Forbidden(f"{caller.name} may only read; this call changes something")
    if kind == OWN and caller.name != node:
        raise Forbidden(f"{caller.name}'s credential changes only {caller.name}'s own files and entry, not {node}'s")


def operator_accounts(secret_file: str | os.PathLike | None) -> frozenset[int]:
    """The local accounts that are the operator without a credential: the secret file's owner, and root.

    Root reads any file, the secret too, so refusing it would protect nothing. Without a secret
    file, the account this node runs as stands in for its owner.
    """
    owner = os.geteuid()
    if secret_file:
        with contextlib.suppress(OSError):  # read_secret has already said what is wrong with it
            owner = os.stat(secret_file).st_uid
    return frozenset({owner, 0})


Owner = Callable[[], int | None]  # the uid at the other end of the caller's connection, asked only when needed

_UNTRUSTED, _LOOPBACK, _NETWORK = 0, 1, 2  # what a caller's address is to the guard


class Guard:
    """Decides who a caller is, from its address, its account on this machine and its credential; one per node."""

    def __init__(
        self,
        secret: bytes | None,
        trusted_networks: Iterable[str] = DEFAULT_TRUSTED_NETWORKS,
        read: str = "open",
        local_operator: str = "owner",
        operator_uids: Iterable[int] = (0,),
        own_address: Callable[[str], bool] = is_own_address,
        node: str = "",
    ) -> None:
        if read not in READ_MODES:
            raise ValueError(f"read must be one of {READ_MODES}, got {read!r}")
        if local_operator not in LOCAL_OPERATOR_MODES:
            raise ValueError(f"local_operator must be one of {LOCAL_OPERATOR_MODES}, got {local_operator!r}")
        self.secret = secret
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_networks)
        self.read = read
        self.local_operator = local_operator
        self.operator_uids = frozenset(operator_uids)
        self.own_address = own_address  # whether an address is this machine's (a caller there is local)
        self.node = node  # the name of the node this guard guards (OWN calls: its own credential)
        self._reader_mac = None if secret is None else reader_token(operator_token(secret)).rpartition(".")[2]
        self._trusted_cache: dict[str, int] = {}
        self._token_cache: dict[str, str] = {}
        # callers are immutable: made once, not per request (a frozen dataclass is slow to build)
        self._by_address = Caller(OPERATOR, trusted_address=True, keyless=secret is None)
        self._callers: dict[str, Caller] = {}

    @classmethod
    def of(cls, security: Security, node: str = "") -> Guard:
        """Node's guard, from its config; SecretError when its secret file cannot be read."""
        secret = read_secret(security.secret_file) if security.secret_file else None
        return cls(
            secret,
            security.trusted_networks,
            security.read,
            local_operator=security.local_operator,
            operator_uids=operator_accounts(security.secret_file),
            node=node,
        )

    def credential(self, principal: str) -> str | None:
        """The credential principal presents to other nodes (None without a secret)."""
        return None if self.secret is None else token_for(self.secret, principal)

    def hop_credential(self) -> str | None:
        """What this node (a peer) shows on the search hops it sends: its hop credential (None without a secret).

        Not its own credential: the friend it asks is only a member, and the node's own
        credential would let that member change the node's files and directory entry.
        """
        return None if self.secret is None or not self.node else hop_token(self.secret, self.node)

    def read_credential(self) -> str | None:
        """What this node presents where it only reads: the reader's credential when reads need one, else None."""
        if self.secret is None or self.read != "members":
            return None
        return reader_token(operator_token(self.secret))

    def needs_credential(self, kind: str) -> bool:
        """Whether a request of this kind is checked at all (OPEN never; READ only for members)."""
        return kind in (MUTATING, OWN) or (kind == READ and self.read == "members")

    def _kind(self, address: str | None) -> int:
        """Whether address (an IP, as a socket or the WSGI REMOTE_ADDR gives it) is trusted, and loopback."""
        if not address:
            return _UNTRUSTED
        known = self._trusted_cache.get(address)
        if known is None:
            ip = parse_ip(address)
            if ip is None or not any(ip in net for net in self.networks):
                known = _UNTRUSTED
            else:
                known = _LOOPBACK if ip.is_loopback else _NETWORK
            if len(self._trusted_cache) > 4096:
                self._trusted_cache.clear()
            self._trusted_cache[address] = known
        return known

    def trusted(self, address: str | None) -> bool:
        """Whether address is in trusted_networks (whoever is calling from it)."""
        return self._kind(address) != _UNTRUSTED

    def operator_by_address(self, address: str | None, owner: Owner | None = None) -> bool:
        """Whether a caller at address is the operator without a credential.

        A trusted address from another machine is; one of this machine (loopback, or an address
        of its own) is when local_operator allows its account: "any" every account, "owner" only
        operator_uids (owner() asks the kernel; unknown is no), "none" nobody.
        """
        kind = self._kind(address)
        if kind == _UNTRUSTED:
            return False
        if self.local_operator == "any" or (kind == _NETWORK and not self.own_address(str(address))):
            return True
        if self.local_operator == "none" or owner is None:
            return False
        return owner() in self.operator_uids

    def identify(self, token: str | None) -> str | None:
        """The principal a credential names when its MAC is right, else None."""
        if not token or self.secret is None or len(token) > 512:
            return None
        principal = self._token_cache.get(token)
        if principal is not None:
            return principal
        name, dot, mac = token.rpartition(".")
        if not dot or not name:
            return None
        expected = self._reader_mac if name == READER else _mac(self.secret, _CREDENTIAL_TAG, name)
        if expected is None or not hmac.compare_digest(mac, expected):
            return None
        if len(self._token_cache) > 1024:
            self._token_cache.clear()
        self._token_cache[token] = name
        return name

    def presented(self, authorization: str | None) -> str | None:
        """The principal whose valid credential an `Authorization` value carries (whatever the address), or None."""
        return self.identify(_from_header(authorization))

    def caller(self, address: str | None, authorization: str | None, owner: Owner | None = None) -> Caller:
        """Who is calling; Unauthorized without a valid credential or an address that makes it the operator.

        A valid credential names the caller wherever it calls from: a peer on loopback is that
        peer, not the operator. Without one, an address that makes the caller the operator
        (operator_by_address; owner says which account made the connection, asked only when the
        address is this machine's) does: on one machine a stale P2P_TOKEN (another network's)
        must not lock the operator out.
        """
        token = _from_header(authorization)
        principal = self.identify(token)
        if principal is not None:
            caller = self._callers.get(principal)
            if caller is None:
                if len(self._callers) > 1024:
                    self._callers.clear()
                caller = self._callers[principal] = Caller(principal)
            return caller
        if self.operator_by_address(address, owner):
            return self._by_address
        if token is None:
            raise Unauthorized(f"{NOT_A_MEMBER}: this call needs a credential (Authorization: Bearer TOKEN)")
        raise Unauthorized(f"{NOT_A_MEMBER}: the credential is not valid here")

    def check(
        self, kind: str, address: str | None, authorization: str | None, owner: Owner | None = None
    ) -> Caller | None:
        """The caller of a request of this kind (None when it needs no credential); Forbidden when it may not."""
        if not self.needs_credential(kind):
            return None
        caller = self.caller(address, authorization, owner)
        permits(kind, caller, self.node)
        return caller

    # --- proof of membership, for peers that verify each other ----------------------------------

    def proof(self, name: str, url: str, challenge: str) -> str | None:
        """Peer name's answer to challenge at url, proving it holds the network's secret.

        The URL is part of it, so a stranger's server cannot relay a real peer's answer and
        pass as that peer at its own address.
        """
        return None if self.secret is None else _mac(self.secret, _PROOF_TAG, name, url, challenge)

    def proves(self, name: str, url: str, challenge: str, proof: object) -> bool:
        """Whether proof is the right answer of peer name at url to challenge."""
        expected = self.proof(name, url, challenge)
        return expected is not None and isinstance(proof, str) and hmac.compare_digest(proof, expected)

    # --- a holder vouches for the content it serves ---------------------------------------------

    def holder_proof(self, holder: str, file: str, size: int, sha256: str, blake3: str, challenge: str) -> str:
        """Holder's answer to a downloader's challenge: "I, a member called holder, serve this content"."""
        return (
            ""
            if self.secret is None or not challenge
            else holder_proof(self.secret, holder, file, size, sha256, blake3, challenge)
        )


def holder_proof(secret: bytes, holder: str, file: str, size: int, sha256: str, blake3: str, challenge: str) -> str:
    """HMAC(secret; holder, file, size, sha256, blake3, challenge): only a member computes it (docs/protocol.md)."""
    return _mac(secret, _HOLDER_TAG, holder, file, str(size), sha256, blake3, challenge)


def holder_proves(
    secret: bytes, holder: str, file: str, size: int, sha256: str, blake3: str, challenge: str, proof: object
) -> bool:
    """Whether proof is member holder's answer to challenge for this very content of file."""
    expected = holder_proof(secret, holder, file, size, sha256, blake3, challenge)
    return isinstance(proof, str) and hmac.compare_digest(proof, expected)


def new_challenge() -> str:
    """A fresh random challenge for a peer to prove its membership."""
    return secrets.token_urlsafe(24)
