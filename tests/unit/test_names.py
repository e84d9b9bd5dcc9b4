"""The one file-name rule (common/names.py): plain names, NFC, no control or format characters, 255 bytes."""

from __future__ import annotations

import unicodedata

import pytest

from common.errors import InvalidName
from common.names import MAX_NAME_BYTES, check_name, fit_name, is_plain_name

HOSTILE = [
    ("dotdot", ".."),
    ("parent", "../etc/passwd"),
    ("nested-parent", "a/../../b"),
    ("absolute", "/etc/passwd"),
    ("separator", "sub/file.txt"),
    ("backslash", "..\\windows"),
    ("nul", "file\x00.txt"),
    ("empty", ""),
    ("dot", "."),
    ("hidden", ".bashrc"),
    ("control", "bad\nname"),
    ("too-long", "a" * 256),
    ("del", "bad\x7fname"),
    ("c1-nel", "bell\x85name.txt"),
    ("rtlo", "invoice\u202etxt.exe"),
    ("zwj", "zw\u200dj.txt"),
    ("bom", "\ufeffname.txt"),
    ("line-separator", "a\u2028b"),
    ("trailing-dot", "name."),
    ("trailing-space", "name "),
    ("trailing-nbsp", "name\u00a0"),
    ("emoji-256-bytes", "\U0001f600" * 64),
]
PLAIN = ["archivo1.txt", "ñandú.pdf", "a b c", "x" * 255, "-dash", "\U0001f600" * 63, "日本語.txt", " leading"]


@pytest.mark.parametrize("name", [n for _, n in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_names_are_refused(name):
    with pytest.raises(InvalidName):
        check_name(name)
    assert not is_plain_name(name)


@pytest.mark.parametrize("name", PLAIN, ids=range(len(PLAIN)))
def test_plain_names_pass_unchanged(name):
    assert check_name(name) == name
    assert is_plain_name(name)


def test_a_lone_surrogate_is_refused():  # JSON can carry one ("\\udc80"); protobuf cannot, so not in HOSTILE
    with pytest.raises(InvalidName, match="surrogate"):
        check_name("a\udc80b")


def test_a_name_is_normalised_to_nfc_so_nfc_and_nfd_twins_are_one_name():
    nfd = unicodedata.normalize("NFD", "caf\u00e9.txt")
    assert check_name(nfd) == "caf\u00e9.txt"
    assert not is_plain_name(nfd)  # what a folder may list: the NFC spelling only


def test_the_255_byte_limit_counts_utf8_bytes_after_normalisation():
    assert len(check_name("\U0001f600" * 63 + "abc").encode()) == MAX_NAME_BYTES
    with pytest.raises(InvalidName, match="256 bytes"):
        check_name("\U0001f600" * 63 + "abcd")


def test_a_refused_character_is_named_by_its_code_point_never_shown_raw():
    with pytest.raises(InvalidName) as err:
        check_name("invoice\u202etxt.exe")
    assert "U+202E" in err.value.detail and "\u202e" not in err.value.detail


@pytest.mark.parametrize("name", ["\U0001f600" * 63, "x" * 255, "short.txt", "é" * 127])
def test_fit_name_cuts_by_bytes_at_a_character_boundary(name):
    fitted = fit_name(".p2p-tmp-0123456789ab-", name)
    assert len(fitted.encode()) <= MAX_NAME_BYTES
    assert fitted.startswith(".p2p-tmp-0123456789ab-")
    assert name.startswith(fitted.removeprefix(".p2p-tmp-0123456789ab-"))
    fitted.encode("utf-8")  # never half a character


def test_fit_name_keeps_the_suffix_whole():
    fitted = fit_name(".", "\U0001f600" * 63, ".p2p-part-0123456789abcdef", limit=247)
    assert fitted.endswith(".p2p-part-0123456789abcdef") and len(fitted.encode()) <= 247
