"""The client CLI's main(): one line on stderr and the error's exit code (SPEC §10), in-process."""

from __future__ import annotations

import pytest

from client import cli
from common.errors import AlreadyExists, Busy, DataLoss, NotFound, P2PError, Unauthorized, Unavailable
from tests.support import free_port


def test_a_usage_error_exits_2(capsys):
    assert cli.main(["download"]) == 2
    assert capsys.readouterr().err.startswith("error: Missing argument")


def test_an_unreachable_maestro_exits_4_with_one_line(capsys):
    code = cli.main(["--maestro", f"http://127.0.0.1:{free_port()}", "--timeout", "0.5", "locate", "x.txt"])
    err = capsys.readouterr().err
    assert code == 4 and len(err.strip().splitlines()) == 1 and err.startswith("error: cannot reach")


REFUSED = "the Maestro refused the locate: not a member of this network; pass --token or run from the network's folder"


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (NotFound, 3, "what went wrong"),
        (Unavailable, 4, "what went wrong"),
        (DataLoss, 5, "what went wrong"),
        (Busy, 6, "what went wrong"),
        (Unauthorized, 7, REFUSED),  # said in the user's words: who refused what, and what to do
        (P2PError, 1, "what went wrong"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_each_error_exits_with_its_code(monkeypatch, capsys, error, code, line):
    def fail(self, name):
        raise error("what went wrong")

    monkeypatch.setattr(cli.Maestro, "locate", fail)
    assert cli.main(["locate", "x.txt"]) == code
    assert capsys.readouterr().err == f"error: {line}\n"


def test_an_existing_target_names_the_flag_that_replaces_it(monkeypatch, capsys, tmp_path):
    def fail(*args, **kwargs):
        raise AlreadyExists(f"{tmp_path / 'x.txt'} already exists")

    monkeypatch.setattr(cli, "_holders", lambda *a: ([{"name": "p", "grpc_address": "127.0.0.1:1"}], "", None))
    monkeypatch.setattr(cli, "fetch", fail)
    assert cli.main(["download", "x.txt", "--out", str(tmp_path / "x.txt")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.txt'} already exists; pass --overwrite to replace it\n"
