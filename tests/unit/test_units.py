"""Sizes and rates as people write and read them (common/units.py)."""

from __future__ import annotations

import pytest

from common.units import format_rate, format_seconds, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("100MiB", 100 * 1024**2),
        ("100 MiB", 100 * 1024**2),
        ("100mib", 100 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("64k", 64_000),
        ("64KiB", 65536),
        ("2G", 2_000_000_000),
        ("1TiB", 1024**4),
        ("10b", 10),
        (".5MiB", 512 * 1024),
    ],
)
def test_sizes_people_write(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "-1", "1.5", "12 parsecs", "1e6", "0x10", "1iB", "1..2M"])
def test_what_is_not_a_size_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="size|whole"):
        parse_size(text)


def test_sizes_and_rates_read_back():
    assert format_size(17) == "17 B"
    assert format_size(9000) == "8.79 KiB"
    assert format_size(200 * 1024**2) == "200.0 MiB"
    assert format_size(1.5 * 1024**3) == "1.50 GiB"
    assert format_rate(200 * 1024**2, 0.5) == "419 MB/s"
    assert format_rate(1_500_000, 1) == "1.5 MB/s"
    assert format_rate(10, 0) == "- MB/s"
    assert format_seconds(0.4213) == "0.42 s"
    assert format_seconds(12.34) == "12.3 s"
    assert format_seconds(185) == "3 min 05 s"
