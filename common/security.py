"""Members only (docs/security.md): the network secret, credentials bound to names, trusted networks.

The secret file is the root of trust. Every credential is derived from it, so nobody keeps a
user database: a credential is `PRINCIPAL.MAC`, where PRINCIPAL is a peer's name or
`@operator` (a name no peer can have) and MAC is HMAC-SHA256(secret, PRINCIPAL), base64url.
Whoever holds the secret (every node, the launcher, an operator who can read the file) can
mint and check any credential; a peer's credential alone lets it act only as itself.

A caller whose address is in `trusted_networks` (loopback by default) is the operator without
a credential, which keeps the classic curl commands (docs/operations.md) working on one
machine. When that caller is
on this machine, `local_operator` also asks which account made its connection: by default only
the account that owns the secret file (and root, who can read it anyway) is the operator; other
local accounts need a credential like a stranger (docs/security.md, "Who loopback trusts").
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

DEFAULT_SECRET_FILE = ".p2p-secret"  # relative to the topology's folder
OPERATOR = "@operator"
TOKEN_ENV = "P2P_TOKEN"
METADATA_KEY = "authorization"  # gRPC metadata keys are lowercase
MIN_SECRET_CHARS = 32
NOT_A_MEMBER = "not a member of this network"

# What a request needs, per endpoint or RPC.
OPEN = "open"  # anyone (health probes)
READ = "read"  # anyone with read: open; members with read: members
MUTATING = "mutating"  # members only (or a trusted address)

_CREDENTIAL_TAG = b"p2pnet credential v1\x00"
_PROOF_TAG = b"p2pnet proof v1\x00"


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


def loose_permissions(path: str | os.PathLike) -> str | None:
    """A warning when others than the owner may read or write the secret file, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: the network's secret is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
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
    """Who is asking: the operator (by credential or by a trusted address) or a peer by its name."""

    name: str
    trusted_address: bool = False

    @property
    def is_operator(self) -> bool:
        return self.name == OPERATOR

    def require_self(self, name: object) -> None:
        """Forbidden unless this caller is the operator or the peer called name."""
        if not self.is_operator and self.name != name:
            raise Forbidden(f"{self.name} may register and heartbeat only as itself, not as {name!r}")


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
        self._trusted_cache: dict[str, int] = {}
        self._token_cache: dict[str, str] = {}

    @classmethod
    def of(cls, security: Security) -> Guard:
        """A node's guard, from its config; SecretError when its secret file cannot be read."""
        secret = read_secret(security.secret_file) if security.secret_file else None
        return cls(
            secret,
            security.trusted_networks,
            security.read,
            local_operator=security.local_operator,
            operator_uids=operator_accounts(security.secret_file),
        )

    def credential(self, principal: str) -> str | None:
        """The credential principal presents to other nodes (None without a secret)."""
        return None if self.secret is None else token_for(self.secret, principal)

    def needs_credential(self, kind: str) -> bool:
        """Whether a request of this kind is checked at all (OPEN never; READ only for members)."""
        return kind == MUTATING or (kind == READ and self.read == "members")

    def _kind(self, address: str | None) -> int:
        """Whether address (an IP, as a socket or the WSGI REMOTE_ADDR gives it) is trusted, and loopback."""
        if not address:
            return _UNTRUSTED
        known = self._trusted_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                known = _UNTRUSTED
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                if not any(ip in net for net in self.networks):
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
        if not dot or not name or not hmac.compare_digest(mac, _mac(self.secret, _CREDENTIAL_TAG, name)):
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

        Such an address (operator_by_address; owner says which account made the connection, asked
        only when the address is this machine's) makes the caller the operator whatever it
        presents: on one machine a stale P2P_TOKEN (another network's) must not lock the operator out.
        """
        token = _from_header(authorization)
        principal = self.identify(token)
        if principal == OPERATOR:  # the operator either way: no need to ask who made the connection
            return Caller(OPERATOR)
        if self.operator_by_address(address, owner):
            return Caller(OPERATOR, trusted_address=True)
        if token is None:
            raise Unauthorized(f"{NOT_A_MEMBER}: this call needs a credential (Authorization: Bearer TOKEN)")
        if principal is None:
            raise Unauthorized(f"{NOT_A_MEMBER}: the credential is not valid here")
        return Caller(principal)

    def check(
        self, kind: str, address: str | None, authorization: str | None, owner: Owner | None = None
    ) -> Caller | None:
        """The caller of a request of this kind, or None when the request needs no credential."""
        if not self.needs_credential(kind):
            return None
        return self.caller(address, authorization, owner)

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


def new_challenge() -> str:
    """A fresh random challenge for a peer to prove its membership."""
    return secrets.token_urlsafe(24)
