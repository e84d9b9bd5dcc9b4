"""Run state only this user can touch (control/private.py): the run folder and the socket fallback folder."""

from __future__ import annotations

import os

import pytest

from control.private import NotPrivate, check_private, make_private

OTHER_UID = 65534


def test_a_missing_folder_is_made_0700(tmp_path):
    folder = make_private(tmp_path / "a" / "run")
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_readable_folder_of_ours_is_tightened_to_0700(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o755)
    make_private(folder, tighten=True)
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_folder_others_can_write_to_is_refused_not_repaired(tmp_path):
    folder = tmp_path / "sockets"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(NotPrivate, match="writable by others"):
        make_private(folder, tighten=True)
    assert folder.stat().st_mode & 0o777 == 0o777


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_a_folder_owned_by_someone_else_is_refused(tmp_path):
    folder = tmp_path / "sockets"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER_UID, OTHER_UID)
    with pytest.raises(NotPrivate, match="not to you"):
        check_private(folder)


def test_a_symlink_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "sockets")
    with pytest.raises(NotPrivate, match="symbolic link"):
        make_private(tmp_path / "sockets", tighten=True)


def test_the_refusal_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "sockets").mkdir(mode=0o777)
    os.chmod(tmp_path / "sockets", 0o777)
    with pytest.raises(NotPrivate) as err:
        check_private(tmp_path / "sockets")
    assert err.value.lines() == [err.value.message] and str(tmp_path / "sockets") in err.value.message
