"""A file's fields on the wire (common/fields.py): sizes, mtimes and digests within bounds."""

from __future__ import annotations

import math

import pytest

from common.errors import BadRequest
from common.fields import (
    MAX_ADDRESS,
    MAX_FILE_SIZE,
    check_grpc_address,
    check_mtime,
    check_sha256,
    check_size,
    mtime_problem,
    size_problem,
)


@pytest.mark.parametrize("value", [0, 1, 2**40, MAX_FILE_SIZE])
def test_sizes_within_bounds_pass(value):
    assert check_size(value) == value


@pytest.mark.parametrize("value", [-1, MAX_FILE_SIZE + 1, 2**63, 2**70, 1.5, "1", True, None], ids=str)
def test_sizes_out_of_bounds_or_not_integers_are_refused(value):
    assert size_problem(value) is not None
    with pytest.raises(BadRequest, match="files\\[3\\].size"):
        check_size(value, "files[3].size")


@pytest.mark.parametrize("value", [0, 1.7e9, -1e9, 2**34, 1700000000])
def test_mtimes_within_bounds_pass(value):
    assert check_mtime(value) == float(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, 2**34 + 1, -(2**31) - 1, "1", False, None])
def test_mtimes_not_finite_or_out_of_range_are_refused(value):
    assert mtime_problem(value) is not None
    with pytest.raises(BadRequest):
        check_mtime(value)


@pytest.mark.parametrize("value", ["", "A" * 64, "a" * 63, "a" * 65, "g" * 64, None, 12])
def test_a_sha256_is_64_lowercase_hex_digits(value):
    with pytest.raises(BadRequest):
        check_sha256(value)
    assert check_sha256("0123456789abcdef" * 4) == "0123456789abcdef" * 4


def test_a_grpc_address_is_host_port_of_at_most_300_characters():
    at_the_bound = "h" * (MAX_ADDRESS - 5) + ":9004"
    assert check_grpc_address(at_the_bound) == at_the_bound
    for value in (at_the_bound + "5", "10.0.0.2", "", None, 9004):
        with pytest.raises(BadRequest, match="grpc_address must be HOST:PORT of at most 300 characters"):
            check_grpc_address(value)
