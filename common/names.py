"""Confine file names that come from the network to a shared folder."""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import InvalidName, PermissionDenied

MAX_NAME_BYTES = 255


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
