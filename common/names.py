"""Names that come from users and the network: peer names (one rule everywhere), file names kept in a folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from common.errors import BadRequest, InvalidName, PermissionDenied

MAX_NAME_BYTES = 255
MAX_PEER_NAME = 64
PEER_NAME_RULE = f"[a-z0-9_-]{{1,{MAX_PEER_NAME}}}"
_PEER_NAME = re.compile(PEER_NAME_RULE)


def peer_name_problem(name: object) -> str | None:
    """Why name is not a valid peer name (topology, Maestro registration, peer /register), or None."""
    if isinstance(name, str) and len(name) > MAX_PEER_NAME:
        return f"{name[:20]!r}... is {len(name)} characters long (at most {MAX_PEER_NAME})"
    if not isinstance(name, str) or not _PEER_NAME.fullmatch(name):
        return f"{name!r} does not match {PEER_NAME_RULE}"
    return None


def check_peer_name(name: object, key: str = "name") -> str:
    """Return name if it is a valid peer name, else raise BadRequest naming the key."""
    problem = peer_name_problem(name)
    if problem is not None:
        raise BadRequest(f"'{key}': {problem}")
    return name  # type: ignore[return-value]


def check_name(name: str) -> str:
    """Return name if it is a plain file name, else raise InvalidName."""
    if not isinstance(name, str) or not name:
        raise InvalidName("file name is empty")
    if "\x00" in name:
        raise InvalidName("file name contains NUL")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidName(f"file name is longer than {MAX_NAME_BYTES} bytes")
    if "/" in name or "\\" in name or os.sep in name:
        raise InvalidName(f"file name {name!r} contains a path separator")
    if name in (".", "..") or name.startswith("."):
        raise InvalidName(f"file name {name!r} is hidden or a relative path")
    if any(ord(c) < 32 for c in name):
        raise InvalidName("file name contains control characters")
    return name


def resolve_in(folder: str | os.PathLike, name: str) -> Path:
    """Return the path of plain name inside folder, refusing escapes.

    The name must pass check_name; an existing path (a symlink, say) must
    also resolve inside the folder, else PermissionDenied.
    """
    check_name(name)
    base = Path(folder).resolve()
    path = base / name
    if path.is_symlink() or path.exists():
        real = path.resolve()
        if real.parent != base and base not in real.parents:
            raise PermissionDenied(f"{name!r} leads outside the shared folder")
    return path
