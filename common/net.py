"""Bind tests: may this machine listen on an address? (the launcher's checks and the servers' start)."""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket

WILDCARDS = ("0.0.0.0", "::")  # binds that listen on every address of the machine


def parse_ip(text: str, *, unmap: bool = True) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """text as an IP address, a %zone id dropped, an IPv4-mapped IPv6 one as IPv4 (unless unmap is
    False); None when text is not an address (a name, say)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if unmap and isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normal_ip(text: str) -> str:
    """One spelling per address (see parse_ip); text as it is when it is not an address."""
    ip = parse_ip(text)
    return text if ip is None else str(ip)


def bind_errno(host: str, port: int) -> int:
    """0 when a listening socket could bind host:port now, else the errno (EADDRINUSE, EADDRNOTAVAIL...).

    SO_REUSEADDR as gunicorn and grpc set it: a port held only by TIME_WAIT connections is free.
    A host that does not resolve counts as EADDRNOTAVAIL.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return errno.EADDRNOTAVAIL
    code = errno.EADDRNOTAVAIL
    for family, socktype, proto, _, addr in infos:
        with socket.socket(family, socktype, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                code = exc.errno or errno.EADDRNOTAVAIL
                continue
        return 0
    return code


def is_local_address_now(host: str) -> bool:
    """True when host (a name or an address) is an address of this machine now: it binds there
    (any refusal but "not an address here" counts as ours)."""
    return host in WILDCARDS or bind_errno(host, 0) != errno.EADDRNOTAVAIL


@functools.lru_cache(maxsize=256)
def is_local_address(host: str) -> bool:
    """is_local_address_now, asked once per process (a topology names each host many times, and a
    name may take a slow DNS lookup)."""
    return is_local_address_now(host)


def bind_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on host:port, in words, or None when it can."""
    code = bind_errno(host, port)
    if code == 0:
        return None
    if code == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine (start this node on its own host, or set its bind)"
    if code == errno.EADDRINUSE:
        return f"port {port} is already in use on {host}"
    return os.strerror(code)
