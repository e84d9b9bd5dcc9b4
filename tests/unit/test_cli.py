"""The client CLI's main(): one line on stderr and the error's exit code (docs/api.md, "Exit codes"), in-process."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest

import client
from client import cli
from client.progress import Progress
from common.errors import AlreadyExists, Busy, DataLoss, NotFound, P2PError, Unauthorized, Unavailable
from tests.support import ROOT, free_port


def test_a_usage_error_exits_2(capsys):
    assert cli.main(["download"]) == 2
    assert capsys.readouterr().err.startswith("error: Missing argument")


def test_an_unreachable_maestro_exits_4_with_one_line(capsys):
    code = cli.main(["--maestro", f"http://127.0.0.1:{free_port()}", "--timeout", "0.5", "locate", "x.txt"])
    err = capsys.readouterr().err
    assert code == 4 and len(err.strip().splitlines()) == 1
    assert "the Maestro at http://127.0.0.1:" in err and "connection refused" in err
    assert "python launcher.py up" in err  # what to run next


REFUSED = (
    "the Maestro refused the locate: not a member of this network; pass --token-file or run from the network's folder"
)


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
    err = capsys.readouterr().err
    assert err.startswith("error: ") and line in err and len(err.splitlines()) == 1


def test_an_existing_target_names_the_flag_that_replaces_it(monkeypatch, capsys, tmp_path):
    def fail(*args, **kwargs):
        raise AlreadyExists(f"{tmp_path / 'x.txt'} already exists")

    monkeypatch.setattr(cli, "_holders", lambda *a: ([{"name": "p", "grpc_address": "127.0.0.1:1"}], "", None))
    monkeypatch.setattr(cli, "fetch", fail)
    assert cli.main(["download", "x.txt", "--out", str(tmp_path / "x.txt")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.txt'} already exists; pass --overwrite to replace it\n"


def test_help_and_version_answer_at_every_level(capsys):
    assert cli.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: ") and "Exit codes: 0 done" in out and "dummy-download" in out
    assert cli.main(["download", "-h"]) == 0
    assert "--sources" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"p2p {client.__version__}\n"


def test_the_installed_command_calls_itself_p2p(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/p2p"])
    assert cli.main(["locate"]) == 2
    assert "see `p2p locate -h`" in capsys.readouterr().err


def test_options_are_accepted_after_the_command(monkeypatch, capsys):
    seen = {}

    def locate(self, name):
        seen["url"] = self.url
        return {"file": name, "peers": []}

    monkeypatch.setattr(cli.Maestro, "locate", locate)
    assert cli.main(["locate", "x.txt", "--json", "--maestro", "http://127.0.0.1:1234/"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": "x.txt", "peers": []}
    assert seen["url"] == "http://127.0.0.1:1234"


@pytest.mark.parametrize(
    ("peer", "url"),
    [
        ("http://127.0.0.1:9003", "http://127.0.0.1:9003"),
        ("https://peer.example:443/", "https://peer.example:443"),
        ("127.0.0.1:9003", "http://127.0.0.1:9003"),
        ("localhost:9003", "http://localhost:9003"),
        ("[::1]:9003", "http://[::1]:9003"),
        ("peer3", None),
        ("peer_3-b", None),
    ],
)
def test_a_peer_is_a_url_or_a_name(peer, url):
    assert cli.peer_url(peer) == url


def test_sizes_are_read_as_people_write_them(monkeypatch, capsys):
    sent = {}

    class Status:
        size = 0

    monkeypatch.setattr(cli.Context, "find_peer", lambda self, peer, need_grpc=False: {"name": peer})

    monkeypatch.setattr(cli.Context, "with_transfer", lambda self, peer, what, use, write=False: Status())
    real_progress = cli.Progress

    def progress(label, total=None, **kw):
        sent["total"] = total
        return real_progress(label, total, **kw)

    monkeypatch.setattr(cli, "Progress", progress)
    assert cli.main(["dummy-upload", "--to", "peer1", "--size", "100MiB"]) == 0
    assert sent["total"] == 100 * 1024 * 1024
    assert "dummy-upload: 100.0 MiB in " in capsys.readouterr().out
    assert cli.main(["dummy-upload", "--to", "peer1", "--size", "lots"]) == 2
    assert "'lots' is not a size" in capsys.readouterr().err


def test_progress_draws_only_on_a_terminal_and_starts_at_the_resumed_offset():
    class Screen(io.StringIO):
        def isatty(self):
            return True

    screen = Screen()
    with Progress("big.bin", stream=screen) as bar:
        bar.start(1000, 400)  # 400 bytes kept from an earlier run
        bar.update(100)
    assert re.search(r"big\.bin:\s+40%\|", screen.getvalue()), screen.getvalue()
    assert bar.count == 100

    pipe = io.StringIO()
    with Progress("big.bin", 1000, stream=pipe) as quiet:
        quiet.update(1000)
    assert pipe.getvalue() == "" and quiet.count == 1000


def test_the_progress_library_is_not_imported_by_a_scripted_command():
    code = "import sys, client.cli; sys.exit('tqdm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30).returncode == 0


def test_the_maestro_is_the_flag_then_the_variable_then_the_topology_then_the_default(monkeypatch, capsys, tmp_path):
    asked: list[str] = []

    def locate(self, name):
        asked.append(self.url)
        return {"file": name, "peers": []}

    monkeypatch.setattr(cli.Maestro, "locate", locate)
    monkeypatch.delenv("P2P_MAESTRO", raising=False)
    monkeypatch.delenv("P2P_TOPOLOGY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["locate", "x"]) == 0  # no topology here: the seeds' Maestro
    (tmp_path / "topology.yaml").write_text("maestro: {host: 10.9.8.7, port: 19000}\npeers: []\n")
    assert cli.main(["locate", "x"]) == 0  # ./topology.yaml's Maestro
    monkeypatch.setenv("P2P_MAESTRO", "http://10.0.0.2:19001/")
    assert cli.main(["locate", "x"]) == 0  # the variable beats the topology
    assert cli.main(["--maestro", "http://10.0.0.3:19002", "locate", "x"]) == 0  # the flag beats both
    capsys.readouterr()
    assert asked == [
        "http://127.0.0.1:9000",
        "http://10.9.8.7:19000",
        "http://10.0.0.2:19001",
        "http://10.0.0.3:19002",
    ]


@pytest.mark.parametrize(
    ("answer", "code", "line"),
    [
        ({"query": "x", "visited": ["peer1"], "messages": 1}, 0, "0 result(s) for 'x'; the query reached 1 peer(s)"),
        ({"results": None}, 0, "0 result(s) for 'x'"),
        ({"results": [{"file": "x.txt", "peer": "peer2"}]}, 0, "  x.txt  on peer2  ?  ?"),
        ({"results": "x.txt"}, 1, "error: http://127.0.0.1:1 answered the search with 'results' that is not a list"),
        ({"results": [], "visited": [{"x": 1}]}, 1, "answered the search with 'visited' that is not a list of names"),
    ],
    ids=["no-results-key", "null", "fields-missing", "not-a-list", "visited-not-names"],
)
def test_a_search_answer_without_results_is_no_results_and_a_malformed_one_is_one_line(
    monkeypatch, capsys, answer, code, line
):
    monkeypatch.setattr(cli.Peer, "search", lambda self, query, **params: answer)
    assert cli.main(["search", "x", "--peer", "http://127.0.0.1:1"]) == code
    captured = capsys.readouterr()
    out = captured.out if code == 0 else captured.err
    assert line in out and "Traceback" not in captured.err
    if code:
        assert len(captured.err.splitlines()) == 1


def test_without_the_maestro_a_locate_asks_the_topologys_first_peers_then_says_the_maestro_is_down(
    monkeypatch, capsys, tmp_path
):
    """Each peer that does not answer may cost --timeout: a dead network is not asked peer after peer."""
    import yaml

    from control.generate import generate

    asked: list[str] = []

    def down(self, name):
        asked.append(self.url)
        raise Unavailable("connection refused")

    monkeypatch.setattr(cli.Maestro, "locate", down)
    monkeypatch.setattr(cli.Peer, "locate", down)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(generate(6, list(range(19000, 19013)))))
    assert cli.main(["--topology", str(path), "locate", "x"]) == 4
    err = capsys.readouterr().err
    assert asked == [
        "http://127.0.0.1:19000",
        *(f"http://127.0.0.1:{19001 + 2 * i}" for i in range(cli.FALLBACK_PEERS)),
    ]
    assert "the Maestro at http://127.0.0.1:19000 does not answer" in err and len(err.splitlines()) == 1
