"""The shared folder reached safely (peer_app/storage.py): no link followed, only what the index lists."""

from __future__ import annotations

import hashlib
import os
import unicodedata

import pytest

from common.errors import AlreadyExists, DataLoss, InvalidName, NotFound, PermissionDenied
from common.names import MAX_NAME_BYTES
from peer_app.storage import TMP_PREFIX, AtomicFile, SharedFolder, temporary_name


@pytest.fixture
def shared(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "plain.txt").write_bytes(b"plain")
    (tmp_path / "secret.txt").write_bytes(b"outside secret")
    return folder


def names(folder: SharedFolder) -> list[str]:
    return sorted(name for name, _ in folder.entries())


def test_a_regular_file_opens_with_its_status_and_nfc_name(shared):
    fh, st, name = SharedFolder(shared).open("plain.txt")
    with fh:
        assert fh.read() == b"plain" and st.st_size == 5 and name == "plain.txt"


def test_a_symlink_leading_outside_is_refused_and_not_listed(shared, tmp_path):
    os.symlink(tmp_path / "secret.txt", shared / "leak.txt")
    with pytest.raises(PermissionDenied, match="symbolic link"):
        SharedFolder(shared).open("leak.txt")
    assert names(SharedFolder(shared)) == ["plain.txt"]


def test_a_symlink_inside_the_share_to_a_hidden_file_is_not_served(shared):
    (shared / ".hidden").write_bytes(b"hidden")
    os.symlink(".hidden", shared / "alias.txt")
    with pytest.raises(PermissionDenied):
        SharedFolder(shared).open("alias.txt")
    assert SharedFolder(shared).stat("alias.txt") is None


def test_a_hardlink_is_neither_listed_nor_served_unless_allowed(shared, tmp_path):
    os.link(tmp_path / "secret.txt", shared / "hard.txt")
    with pytest.raises(PermissionDenied, match="hard links"):
        SharedFolder(shared).open("hard.txt")
    assert names(SharedFolder(shared)) == ["plain.txt"]
    allowed = SharedFolder(shared, allow_hardlinks=True)
    assert names(allowed) == ["hard.txt", "plain.txt"]
    fh, _, _ = allowed.open("hard.txt")
    with fh:
        assert fh.read() == b"outside secret"


def test_a_fifo_is_refused_without_hanging(shared):
    os.mkfifo(shared / "pipe")
    with pytest.raises(NotFound, match="not a regular file"):
        SharedFolder(shared).open("pipe")
    assert names(SharedFolder(shared)) == ["plain.txt"]


def test_names_the_rule_refuses_are_not_listed(shared):
    for odd in ("x.", "bell\x85.txt", unicodedata.normalize("NFD", "caf\u00e9.txt"), ".hidden"):
        (shared / odd).write_bytes(b"odd")
    assert names(SharedFolder(shared)) == ["plain.txt"]


def test_a_file_whose_mtime_is_out_of_bounds_is_not_shared(shared):
    real = os.stat(shared / "plain.txt")
    far = os.stat_result((*real[:7], 2**35, 2**35, 2**35))  # ext4 cannot store it: a made-up status
    assert isinstance(SharedFolder(shared).refusal("plain.txt", far), NotFound)
    assert SharedFolder(shared).refusal("plain.txt", real) is None


def test_an_upload_lands_only_when_size_and_sha256_match(shared):
    data = b"new bytes"
    with AtomicFile(shared, "new.txt") as out:
        out.write(data)
        st = out.commit(hashlib.sha256(data).hexdigest(), len(data))
    assert (shared / "new.txt").read_bytes() == data and st.st_size == len(data)
    with AtomicFile(shared, "bad.txt") as out, pytest.raises(DataLoss):
        out.write(data)
        out.commit(hashlib.sha256(b"other").hexdigest(), len(data))
    assert sorted(os.listdir(shared)) == ["new.txt", "plain.txt"]


def test_an_upload_of_an_nfd_twin_is_the_same_name(shared):
    (shared / "caf\u00e9.txt").write_bytes(b"nfc")
    with pytest.raises(AlreadyExists):
        AtomicFile(shared, unicodedata.normalize("NFD", "caf\u00e9.txt"))
    with AtomicFile(shared, unicodedata.normalize("NFD", "caf\u00e9.txt"), overwrite=True) as out:
        out.write(b"nfd")
        out.commit(hashlib.sha256(b"nfd").hexdigest(), 3)
    assert sorted(os.listdir(shared)) == ["caf\u00e9.txt", "plain.txt"]
    assert (shared / "caf\u00e9.txt").read_bytes() == b"nfd"
    nfd_only = shared.parent / "nfd"
    nfd_only.mkdir()
    (nfd_only / unicodedata.normalize("NFD", "caf\u00e9.txt")).write_bytes(b"nfd")
    with pytest.raises(AlreadyExists, match="another Unicode spelling"):
        AtomicFile(nfd_only, "caf\u00e9.txt", overwrite=True)


def test_an_upload_never_replaces_a_symlink_or_writes_through_it(shared, tmp_path):
    os.symlink(tmp_path / "secret.txt", shared / "leak.txt")
    with pytest.raises(PermissionDenied):
        AtomicFile(shared, "leak.txt", overwrite=True)
    assert (tmp_path / "secret.txt").read_bytes() == b"outside secret"


def test_a_252_byte_emoji_name_gets_a_temporary_name_within_255_bytes(shared):
    name = "\U0001f600" * 63
    assert len(temporary_name(name).encode()) <= MAX_NAME_BYTES
    data = b"smile"
    with AtomicFile(shared, name) as out:
        out.write(data)
        out.commit(hashlib.sha256(data).hexdigest(), len(data))
    assert (shared / name).read_bytes() == data
    assert not [n for n in os.listdir(shared) if n.startswith(TMP_PREFIX)]


def test_an_overlong_name_is_invalid_before_anything_is_written(shared):
    with pytest.raises(InvalidName):
        AtomicFile(shared, "\U0001f600" * 64)
    assert sorted(os.listdir(shared)) == ["plain.txt"]


def test_stale_temporaries_are_removed_by_name_inside_the_folder(shared, tmp_path):
    (shared / f"{TMP_PREFIX}abc-x").write_bytes(b"left over")
    os.symlink(tmp_path / "secret.txt", shared / f"{TMP_PREFIX}link")
    assert SharedFolder(shared).remove_stale_temporaries() == 1
    assert (tmp_path / "secret.txt").exists()
