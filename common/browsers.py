"""Browsers are strangers: the Host and cross-site checks every REST node makes (docs/security.md).

A browser on the operator's machine reaches the nodes from loopback, which may make it the
operator. Two rules keep a web page from using that:

- **Host.** A page of another site whose name is re-pointed at this machine (DNS rebinding)
  sends its own name in `Host`. A node answers only to the names it is known by: its topology
  host, its bind address, `localhost`, and `security.allowed_hosts`. An IP address is always
  accepted: DNS cannot re-point an address, so a page whose URL holds one came from that very
  address. Ports are not compared (a rebinding page uses the node's own port).
- **Cross-site.** A request a browser makes on behalf of another page (`Sec-Fetch-Site:
  cross-site` or `same-site`, or an `Origin` other than the node's own) is refused, except a
  link followed to a page (a top-level GET navigation), which shows the answer to the user and
  never to the other site. Requests without these headers (curl, the CLI, the nodes) pass.

Pure Python, no Flask: the Maestro's WSGI fast path and common.web share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from common.errors import CrossSite, MisdirectedRequest
from common.net import WILDCARDS, parse_ip

LOOPBACK_NAMES = ("localhost",)  # browsers resolve it themselves: never re-pointed by DNS
CROSS_SITE = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values of another page's request
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CACHE_LIMIT = 256


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a Host header value: lowercase, no IPv6 brackets, no trailing dot; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
    if (port and not (port.isascii() and port.isdigit())) or (not port and value.endswith(":")):
        return None
    return host.rstrip("."), int(port) if port else None


def is_address(host: str) -> bool:
    """Whether host is an IP address literal (an IPv6 one may carry a %zone)."""
    return parse_ip(host) is not None


def check_host_name(value: str) -> str:
    """value as an `allowed_hosts` entry: a DNS name or an address, lowercase, no trailing dot; ValueError else."""
    name = value.strip().lower().rstrip(".")
    if is_address(name):
        return name
    if ":" in name or "/" in name:
        raise ValueError("a host name without a port or a scheme, like maestro.example.org")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("not a host name (letters, digits, '-' and '.', like maestro.example.org)")
    return name


class HostCheck:
    """Which `Host` header values a node answers to; see the module's docstring."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(n.lower().rstrip(".") for n in names if n)
        self._seen: dict[str, bool] = {}

    @classmethod
    def of_node(cls, host: str, bind: str = "", allowed_hosts: Iterable[str] = ()) -> HostCheck:
        """A node's check: its topology host, its bind address (unless a wildcard), localhost, allowed_hosts."""
        own = [host] + ([bind] if bind and bind not in WILDCARDS else [])
        return cls([*own, *LOOPBACK_NAMES, *allowed_hosts])

    def accepts(self, header: str | None) -> bool:
        """Whether a request with this Host header is for this node (no header: an HTTP/1.0 client, yes)."""
        if not header:
            return True
        known = self._seen.get(header)
        if known is None:
            parts = split_host(header)
            known = parts is not None and (parts[0] in self.names or is_address(parts[0]))
            if len(self._seen) >= _CACHE_LIMIT:
                self._seen.clear()
            self._seen[header] = known
        return known

    def check(self, header: str | None) -> None:
        """MisdirectedRequest unless accepts(header)."""
        if not self.accepts(header):
            raise MisdirectedRequest(
                f"this node does not answer to the name {str(header)[:100]!r} (a page of another site, re-pointed "
                "at it?): call it by its address or its topology host, or add the name to security.allowed_hosts"
            )


def _own_origin(scheme: str, host: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of this node as a request for Host: host over scheme shows it."""
    parts = split_host(host)
    if parts is None:
        return None
    return scheme, parts[0], parts[1] or _DEFAULT_PORTS.get(scheme, 0)


def _origin(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin header value; None for "null" or anything malformed."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or _DEFAULT_PORTS.get(parts.scheme, 0)


def cross_site(
    method: str,
    scheme: str,
    host: str | None,
    origin: str | None,
    fetch_site: str | None,
    fetch_mode: str | None,
    fetch_dest: str | None,
) -> bool:
    """Whether a browser sent this request on behalf of another site's page (see the module's docstring)."""
    navigation = method == "GET" and fetch_mode == "navigate" and fetch_dest in (None, "document")
    if fetch_site is not None and fetch_site.strip().lower() in CROSS_SITE:
        return not navigation
    if origin is None:
        return False
    own = _own_origin(scheme, host) if host else None
    return own is None or _origin(origin) != own  # "null" (a sandboxed page, a file) is never our own


def refuse_cross_site() -> CrossSite:
    """The CrossSite (403) a node answers when cross_site() says yes."""
    return CrossSite(
        "a browser page of another site may not call this node (Origin / Sec-Fetch-Site); "
        "open the node's own page (/ui), or use curl or the CLI"
    )
