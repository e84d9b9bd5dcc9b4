"""Names that come from users and the network: peer names (one rule everywhere), file names kept in a folder."""

from __future__ import annotations

import os
import re
import unicodedata

from common.errors import BadRequest, InvalidName

MAX_NAME_BYTES = 255
# Cc: C0, DEL, C1; Cf: format (RTLO, ZWJ, BOM...); Cs: lone surrogates; Zl, Zp: line and paragraph separators
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
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


def name_problem(name: object) -> str | None:
    """Why name is not a plain file name in its NFC form, or None (the rule check_name applies)."""
    if not isinstance(name, str) or not name:
        return "file name is empty"
    if "\x00" in name:
        return "file name contains NUL"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "file name is not valid Unicode (a lone surrogate)"
    if size > MAX_NAME_BYTES:
        return f"file name is {size} bytes long in UTF-8 (at most {MAX_NAME_BYTES})"
    if "/" in name or "\\" in name or os.sep in name:
        return f"file name {name!r} contains a path separator"
    if name in (".", "..") or name.startswith("."):
        return f"file name {name!r} is hidden or a relative path"
    if not name.isprintable():  # fast path in C: a printable name holds none of the refused categories
        for char in name:
            if unicodedata.category(char) in REFUSED_CATEGORIES:
                return f"file name contains the control or format character U+{ord(char):04X}"
    if name[-1] == "." or name[-1].isspace():
        return f"file name {name!r} ends with a dot or a space"
    if not unicodedata.is_normalized("NFC", name):
        return f"file name {name!r} is not in Unicode NFC form"
    return None


def check_name(name: object) -> str:
    """Return the NFC form of name if that is a plain file name, else raise InvalidName.

    The one file-name rule of the network (Maestro, peers' REST and gRPC, the index): NFC,
    at most 255 bytes of UTF-8, no separator, not hidden, no control or format character
    (C0, DEL, C1, RTLO, ZWJ...), no trailing dot or space. Two spellings of one name (NFC and
    NFD) are one name.
    """
    if isinstance(name, str):
        name = unicodedata.normalize("NFC", name)
    problem = name_problem(name)
    if problem is not None:
        raise InvalidName(problem)
    return name  # type: ignore[return-value]


def is_plain_name(name: str) -> bool:
    """True when name is already a plain NFC file name (what a shared folder may list)."""
    return name_problem(name) is None


def fit_name(prefix: str, name: str, suffix: str = "", limit: int = MAX_NAME_BYTES) -> str:
    """prefix + name + suffix, with name cut (at a character boundary) so the whole fits limit bytes of UTF-8."""
    room = limit - len(prefix.encode("utf-8")) - len(suffix.encode("utf-8"))
    cut = name.encode("utf-8")[: max(room, 0)].decode("utf-8", "ignore")
    return f"{prefix}{cut}{suffix}"
