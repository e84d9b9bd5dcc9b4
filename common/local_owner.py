"""Which local account is at the other end of a TCP connection (docs/security.md, "Who loopback trusts").

A caller on this machine connects from a socket of this machine; the kernel knows the account
that made that socket. We ask it through sock_diag netlink (what `ss -e` reads): one request
names the exact connection (both addresses and ports) and the answer carries the socket's uid.
Only an established connection counts: once the caller has closed, the kernel's leftover
(TIME_WAIT) reports no account, and a port may be reused by someone else.

Everything here fails closed: no netlink (not Linux, a sandbox), no such socket, or any odd
answer gives None, "unknown", which never makes anyone the operator. The lookup costs a few
microseconds (a netlink round trip); callers cache it per connection, never per address.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
import weakref
from collections.abc import Iterable

from common.net import is_local_address_now, parse_ip

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
TCP_ESTABLISHED = 1
_NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states
_MSG_HEAD = struct.Struct("=BBBB")  # inet_diag_msg: family, state, timer, retrans, then the sockid (48 bytes)
_MSG_UID = struct.Struct("=I")  # ... expires, rqueue, wqueue (12 bytes), then uid
_UID_OFFSET = _HEADER.size + _MSG_HEAD.size + 48 + 12

Address = tuple[str, int]


def _packed(family: int, host: str) -> bytes:
    raw = socket.inet_pton(family, host)
    return raw + bytes(16 - len(raw))


def _ask(family: int, client: Address, server: Address) -> int | None:
    """The uid of this machine's socket at client connected to server, over one netlink request."""
    sockid = (
        struct.pack("!HH", client[1], server[1])
        + _packed(family, client[0])
        + _packed(family, server[0])
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)  # any interface, any cookie
    )
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_ESTABLISHED) + sockid
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body, (0, 0))
        answer = nl.recv(8192)
    if len(answer) < _UID_OFFSET + _MSG_UID.size:
        return None
    kind = _HEADER.unpack_from(answer)[1]
    if kind != SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: ENOENT (no such socket here), or anything else
        return None
    state = _MSG_HEAD.unpack_from(answer, _HEADER.size)[1]
    if state != TCP_ESTABLISHED:  # TIME_WAIT and friends report uid 0: never an account
        return None
    return _MSG_UID.unpack_from(answer, _UID_OFFSET)[0]


def _forms(host: str) -> list[tuple[int, str]]:
    """(family, address) forms to look host up under: an IPv4-mapped IPv6 address both ways."""
    ip = parse_ip(host, unmap=False)
    if ip is None:
        return []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return [(socket.AF_INET, str(ip.ipv4_mapped)), (socket.AF_INET6, str(ip))]
        return [(socket.AF_INET6, str(ip))]
    return [(socket.AF_INET, str(ip))]


def _forms_of(family: int, host: str) -> str | None:
    return next((h for f, h in _forms(host) if f == family), None)


def socket_owner(client: Address, servers: Iterable[Address]) -> int | None:
    """The uid that owns this machine's socket at client, connected to one of servers; None when unknown.

    servers lists where the caller may have connected to (this node's address and port as the
    accepting socket shows it, or the candidates a gRPC server can name); the first match wins.
    """
    for family, client_host in _forms(client[0]):
        for server in servers:
            server_host = _forms_of(family, server[0])
            if server_host is None:
                continue
            try:
                uid = _ask(family, (client_host, client[1]), (server_host, server[1]))
            except (OSError, ValueError, struct.error):  # no netlink here, or a malformed address
                return None
            if uid is not None:
                return uid
    return None


def owner_of_socket(sock: socket.socket) -> int | None:
    """The uid at the other end of sock, an accepted connection (None when unknown, e.g. not local)."""
    try:
        client, server = sock.getpeername(), sock.getsockname()
    except (OSError, AttributeError, TypeError):
        return None
    if not isinstance(client, tuple) or not isinstance(server, tuple):
        return None  # a unix socket: no TCP peer to look up
    return socket_owner((client[0], client[1]), [(server[0], server[1])])


class ConnectionOwners:
    """owner_of_socket, remembered for as long as the connection's socket object lives.

    A keep-alive connection asks the kernel once; a new connection (even from the same port) is
    a new socket object, so nothing learned about one connection is ever applied to another.
    """

    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def of(self, sock: object) -> int | None:
        if sock is None:
            return None
        try:
            return self._known[sock]
        except KeyError:
            pass
        except TypeError:  # an object that cannot be weakly referenced: ask every time
            return owner_of_socket(sock)  # type: ignore[arg-type]
        uid = self._known[sock] = owner_of_socket(sock)  # type: ignore[arg-type]
        return uid


_LOCAL_TTL = 60.0  # seconds an answer of is_own_address holds (a machine's addresses change rarely)
_local_seen: dict[str, tuple[bool, float]] = {}


def is_own_address(host: str) -> bool:
    """Whether host (an IP address) is one of this machine's own addresses (loopback always is).

    common.net.is_local_address_now, whose answers here expire (common.net.is_local_address keeps
    them for the launcher's run; a node runs for days).
    """
    forms = _forms(host)
    if not forms:
        return False
    address = forms[0][1]
    if ipaddress.ip_address(address).is_loopback:
        return True
    now = time.monotonic()
    seen = _local_seen.get(address)
    if seen is not None and now - seen[1] < _LOCAL_TTL:
        return seen[0]
    own = is_local_address_now(address)
    if len(_local_seen) > 256:
        _local_seen.clear()
    _local_seen[address] = (own, now)
    return own
