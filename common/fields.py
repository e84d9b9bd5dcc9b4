"""What fields may hold on the wire: a file's size, mtime and digests, a node's addresses (one rule for every reader).

The Maestro checks each registered file and address with these, a peer checks the answers of
other peers (and what a would-be member says of itself) with them, and a peer's index lists
only files whose fields pass, so a peer never announces what the Maestro would refuse. Limits,
and why:

- size: an integer in 0..MAX_FILE_SIZE (2^53 - 1, 8 PiB): the largest integer a JSON number
  keeps exactly in every reader (a browser's page included); far below SQLite's 2^63 - 1.
- mtime: a finite number of seconds since the epoch in MIN_MTIME..MAX_MTIME (1901 to 2514,
  what ext4, XFS and btrfs store); NaN and Infinity are refused.
- sha256: 64 lowercase hex digits.
- blake3: 64 lowercase hex digits, or "" (peers from before BLAKE3 was recorded).
- a REST URL or a gRPC address (HOST:PORT): at most MAX_ADDRESS (300) characters; a DNS name
  is at most 253, so 300 holds any name or IPv6 literal with its scheme and port.
- a reason a hop is missing from an answer (`unreachable`, `timed out`...): at most MAX_REASON (64).
"""

from __future__ import annotations

import math
import re

from common.errors import BadRequest

MAX_FILE_SIZE = 2**53 - 1
MIN_MTIME = -(2**31)
MAX_MTIME = 2**34
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_ADDRESS = 300
MAX_REASON = 64


def size_problem(value: object) -> str | None:
    """Why value is not a file size, or None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    if not 0 <= value <= MAX_FILE_SIZE:
        return f"must be within 0..{MAX_FILE_SIZE}"
    return None


def mtime_problem(value: object) -> str | None:
    """Why value is not a modification time, or None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "must be a number"
    if not math.isfinite(value) or not MIN_MTIME <= value <= MAX_MTIME:
        return f"must be a finite number of seconds within {MIN_MTIME}..{MAX_MTIME}"
    return None


def sha256_problem(value: object) -> str | None:
    """Why value is not a hex sha256 digest, or None."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        return "must be 64 lowercase hex digits"
    return None


def blake3_problem(value: object) -> str | None:
    """Why value is not a hex BLAKE3 digest (or "": none known), or None."""
    return None if value == "" else sha256_problem(value)


def grpc_address_problem(value: object) -> str | None:
    """Why value is not a gRPC address (HOST:PORT of at most MAX_ADDRESS characters), or None."""
    if not isinstance(value, str) or ":" not in value or len(value) > MAX_ADDRESS:
        return f"must be HOST:PORT of at most {MAX_ADDRESS} characters"
    return None


def check_field(key: str, problem: str | None) -> None:
    """Raise BadRequest naming key when problem is not None."""
    if problem is not None:
        raise BadRequest(f"{key} {problem}")


def check_size(value: object, key: str = "size") -> int:
    """Return value if it is a file size, else raise BadRequest naming key."""
    check_field(key, size_problem(value))
    return value  # type: ignore[return-value]


def check_mtime(value: object, key: str = "mtime") -> float:
    """Return value as a float if it is a modification time, else raise BadRequest naming key."""
    check_field(key, mtime_problem(value))
    return float(value)  # type: ignore[arg-type]


def check_grpc_address(value: object, key: str = "grpc_address") -> str:
    """Return value if it is a gRPC address, else raise BadRequest naming key."""
    check_field(key, grpc_address_problem(value))
    return value  # type: ignore[return-value]


def check_sha256(value: object, key: str = "sha256") -> str:
    """Return value if it is a hex sha256 digest, else raise BadRequest naming key."""
    check_field(key, sha256_problem(value))
    return value  # type: ignore[return-value]
