"""File names from the network stay inside the shared folder."""

from __future__ import annotations

import os

import pytest

from common.errors import InvalidName, PermissionDenied
from common.names import check_name, resolve_in

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
]


@pytest.mark.parametrize("name", [n for _, n in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_names_are_refused(tmp_path, name):
    with pytest.raises(InvalidName):
        resolve_in(tmp_path, name)


@pytest.mark.parametrize("name", ["archivo1.txt", "ñandú.pdf", "a b c", "x" * 255, "-dash"])
def test_plain_names_resolve_inside_the_folder(tmp_path, name):
    assert resolve_in(tmp_path, name) == tmp_path.resolve() / name
    assert check_name(name) == name


def test_symlink_leading_outside_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "secret").write_text("no")
    os.symlink(tmp_path / "secret", shared / "link.txt")
    with pytest.raises(PermissionDenied):
        resolve_in(shared, "link.txt")


def test_symlink_inside_the_folder_is_allowed(tmp_path):
    (tmp_path / "real.txt").write_text("ok")
    os.symlink(tmp_path / "real.txt", tmp_path / "alias.txt")
    assert resolve_in(tmp_path, "alias.txt").name == "alias.txt"
