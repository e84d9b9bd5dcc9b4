"""A peer's URL as the network accepts it (pure: the gRPC process checks URLs too, without Flask)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from common.errors import BadRequest
from common.fields import MAX_ADDRESS


def _split_url(value: object, key: str, what: str, max_length: int) -> tuple[SplitResult, int | None]:
    """value's parts and port; BadRequest naming key when it is not a string URL with a valid port."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise BadRequest(f"'{key}' must be {what}")
    try:
        parts = urlsplit(value)
        return parts, parts.port
    except ValueError:
        raise BadRequest(f"'{key}' is not a valid URL: {value[:80]!r}") from None


def check_peer_url(value: object, *, tls: bool = False, key: str = "url") -> str:
    """Return value as `scheme://host:port` (the network's scheme), else BadRequest.

    A peer's address and nothing more: a path, query, fragment or user info is refused, so a
    registered URL can never make this peer call somewhere else than another peer's API.
    """
    scheme = "https" if tls else "http"
    parts, port = _split_url(value, key, f"{scheme}://HOST:PORT", MAX_ADDRESS)
    value = str(value)
    if parts.scheme != scheme or not parts.hostname or port is None:
        raise BadRequest(f"'{key}' must be {scheme}://HOST:PORT (this network's scheme), got {value[:80]!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BadRequest(f"'{key}' must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise BadRequest(f"'{key}' must be {scheme}://HOST:PORT only, without a path, query or fragment")
    host = parts.hostname
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
