"""Sizes and rates as people write and read them: `100MiB` in, `100.0 MiB` and `512 MB/s` out."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(text: str) -> int:
    """Bytes from `123`, `100MiB`, `1.5GB`, `64k` (k/M/G/T: powers of 1000; Ki/Mi/Gi/Ti: of 1024).

    Raises ValueError with a message a user can act on.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with a unit, e.g. 4096, 100MiB, 1.5GB")
    number, prefix, binary, _ = match.groups()
    if binary and not prefix:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with a unit, e.g. 4096, 100MiB, 1.5GB")
    value = float(number) * (1024 if binary else 1000) ** _POWERS[prefix.lower()]
    if value != int(value) and not prefix:
        raise ValueError(f"{text!r}: a number of bytes must be whole")
    return int(value)


def format_size(n: float) -> str:
    """`17 B`, `8.8 KiB`, `200.0 MiB`, `1.50 GiB`: binary units, three significant figures or so."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_BINARY) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.2f} {_BINARY[unit]}" if value < 10 else f"{value:.1f} {_BINARY[unit]}"


def format_rate(nbytes: float, seconds: float) -> str:
    """Throughput in MB/s (10^6 bytes per second, as disks and networks are rated)."""
    if seconds <= 0:
        return "- MB/s"
    rate = nbytes / seconds / 1e6
    return f"{rate:.0f} MB/s" if rate >= 100 else f"{rate:.1f} MB/s" if rate >= 1 else f"{rate:.3f} MB/s"


def format_seconds(seconds: float) -> str:
    """`0.42 s`, `12.3 s`, `3 min 05 s`."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"
