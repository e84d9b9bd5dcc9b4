"""The download's hasher: the digest always covers what the partial file holds, however the bytes landed."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import blake3
import pytest

from client.partial import InOrderHasher, PartialFile

KiB = 1024
PIECE = 64 * KiB


def _part(tmp_path: Path, data: bytes) -> PartialFile:
    return PartialFile(tmp_path / "f.bin", len(data), hashlib.sha256(data).hexdigest(), PIECE)


def _land(part: PartialFile, hasher: InOrderHasher, position: int, data: bytes) -> None:
    """What the scheduler does with a block: write it into the file, then tell the hasher."""
    part.write(position, data)
    hasher.landed(position, memoryview(data))


def _blocks(size: int, block: int) -> list[tuple[int, int]]:
    return [(at, min(block, size - at)) for at in range(0, size, block)]


@pytest.mark.parametrize("kind", ["sha256", "blake3"])
def test_bytes_landing_in_order_are_hashed_from_the_buffer_without_reading_back(tmp_path: Path, kind: str) -> None:
    data = os.urandom(5 * PIECE + 123)
    part = _part(tmp_path, data)
    hasher = InOrderHasher(part, kind=kind, block=16 * KiB)
    hasher.start()
    for at, n in _blocks(len(data), 10_000):
        _land(part, hasher, at, data[at : at + n])
    expected = hashlib.sha256(data).hexdigest() if kind == "sha256" else blake3.blake3(data).hexdigest()
    assert hasher.hexdigest() == expected
    assert hasher.inline == len(data)  # every byte came from the writer's buffer


def test_bytes_landing_out_of_order_from_several_writers_are_read_back_in_order(tmp_path: Path) -> None:
    data = os.urandom(8 * PIECE)
    part = _part(tmp_path, data)
    hasher = InOrderHasher(part, kind="blake3", block=16 * KiB)
    hasher.start()
    blocks = _blocks(len(data), 7_000)
    random.Random(4).shuffle(blocks)
    for at, n in blocks:
        _land(part, hasher, at, data[at : at + n])
    assert hasher.hexdigest() == blake3.blake3(data).hexdigest()
    assert hasher.hashed == len(data)


def test_pieces_kept_from_an_earlier_run_are_read_back(tmp_path: Path) -> None:
    data = os.urandom(4 * PIECE)
    part = _part(tmp_path, data)
    part.write(0, data[: 2 * PIECE])
    part.mark_done(0)
    part.mark_done(1)
    part.close()
    part = _part(tmp_path, data)  # the resumed download
    assert part.done == {0, 1}
    hasher = InOrderHasher(part, kind="sha256")
    hasher.start()
    for at, n in _blocks(2 * PIECE, 5_000):
        _land(part, hasher, 2 * PIECE + at, data[2 * PIECE + at : 2 * PIECE + at + n])
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.inline < len(data)


def test_a_byte_written_again_after_it_was_hashed_makes_the_digest_that_of_the_file(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE)
    part = _part(tmp_path, data)
    hasher = InOrderHasher(part, kind="sha256")
    hasher.start()
    _land(part, hasher, 0, data)
    other = bytes(100)
    _land(part, hasher, 50, other)  # the file now holds other bytes there
    now = data[:50] + other + data[150:]
    assert hasher.hexdigest() == hashlib.sha256(now).hexdigest()


def test_bytes_landing_twice_ahead_of_the_frontier_make_the_digest_that_of_the_file(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE)
    part = _part(tmp_path, data)
    hasher = InOrderHasher(part, kind="sha256")
    _land(part, hasher, PIECE, data[PIECE:])
    _land(part, hasher, PIECE + 10, bytes(5))  # noted twice: not hashed twice
    _land(part, hasher, 0, data[:PIECE])
    hasher.start()
    now = bytearray(data)
    now[PIECE + 10 : PIECE + 15] = bytes(5)
    assert hasher.hexdigest() == hashlib.sha256(now).hexdigest()


def test_a_file_not_all_landed_has_no_digest(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE)
    part = _part(tmp_path, data)
    hasher = InOrderHasher(part, kind="sha256")
    hasher.start()
    _land(part, hasher, 0, data[:PIECE])
    hasher.stop()
    with pytest.raises(OSError, match="were hashed"):
        hasher.hexdigest()
