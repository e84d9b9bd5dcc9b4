"""Which credential the CLI shows to whom (client/keys.py), and where it reads it from (--token-file)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from client import cli
from client.keys import Keys, endpoint
from common.errors import BadRequest
from common.security import operator_token, peer_token, reader_token
from tests.support import ROOT

SECRET = b"0123456789abcdef0123456789abcdef-network-one"
OPERATOR = operator_token(SECRET)
READER = reader_token(OPERATOR)
OWN = ["http://10.0.0.1:9000", "http://10.0.0.2:9001", "10.0.0.2:9002"]  # as the topology names them
BAIT = {"name": "peer9", "grpc_address": "10.0.0.66:9002"}  # an address from the directory, a member's choice


def test_endpoints_compare_urls_and_addresses_alike():
    assert endpoint("http://10.0.0.2:9001/") == endpoint("10.0.0.2:9001") == "10.0.0.2:9001"
    assert endpoint("[::1]:9002") == endpoint("https://[::1]:9002") == "::1:9002"
    assert endpoint("Peer.Example:1") == "peer.example:1"
    assert endpoint("nonsense") == endpoint("http://h:x") == ""


def test_the_operators_credential_reads_as_the_reader_and_writes_only_to_the_networks_own_nodes():
    keys = Keys(OPERATOR).with_own(OWN)
    assert keys.read("http://10.0.0.1:9000").token == READER
    assert keys.read(BAIT["grpc_address"]).token == READER
    assert keys.write({"name": "peer1", "grpc_address": "10.0.0.2:9002"}).token == OPERATOR
    with pytest.raises(BadRequest, match="the operator's credential does not go there"):
        keys.write(BAIT)


def test_reads_show_nothing_where_the_topology_says_read_open():
    keys = Keys(OPERATOR, reads_open=True).with_own(OWN)
    assert keys.read("http://10.0.0.1:9000").token is None
    assert keys.read(BAIT["grpc_address"]).token is None
    assert keys.write({"name": "peer1", "grpc_address": "10.0.0.2:9002"}).token == OPERATOR


def test_a_peers_credential_goes_only_to_the_networks_own_nodes_and_its_own_entry():
    peer9 = peer_token(SECRET, "peer9")
    keys = Keys(peer9).with_own(OWN)
    assert keys.read("http://10.0.0.1:9000").token == peer9
    assert keys.read(BAIT["grpc_address"]).token is None
    assert keys.write(BAIT).token == peer9  # the directory's address for peer9: only peer9's credential wrote it
    with pytest.raises(BadRequest, match="your credential does not go there"):
        keys.write({"name": "peer8", "grpc_address": "10.0.0.66:9002"})


def test_the_readers_credential_goes_to_any_read_and_never_with_a_write_to_an_address_the_directory_chose():
    keys = Keys(READER).with_own(OWN)
    assert keys.read(BAIT["grpc_address"]).token == READER
    with pytest.raises(BadRequest, match="your credential does not go there"):
        keys.write(BAIT)  # it writes nothing anyway: nothing to show there
    assert keys.write({"name": "peer1", "grpc_address": "10.0.0.2:9002"}).token == READER  # the network's node: 403


@pytest.fixture
def seen(monkeypatch):
    """The credential each Maestro /locate was asked with."""
    tokens: list[str | None] = []

    def locate(self, name):
        tokens.append(self.credentials.token)
        return {"file": name, "peers": []}

    monkeypatch.setattr(cli.Maestro, "locate", locate)
    monkeypatch.delenv("P2P_TOKEN", raising=False)
    monkeypatch.delenv("P2P_TOKEN_FILE", raising=False)
    monkeypatch.delenv("P2P_TOPOLOGY", raising=False)
    return tokens


def test_the_credential_comes_from_a_file_or_the_environment(seen, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    token_file = tmp_path / "reader.token"
    token_file.write_text(f"\n{READER}\n")
    token_file.chmod(0o600)
    assert cli.main(["--token-file", str(token_file), "locate", "x"]) == 0
    monkeypatch.setenv("P2P_TOKEN_FILE", str(token_file))
    assert cli.main(["locate", "x"]) == 0
    assert seen == [READER, READER]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("P2P_TOKEN", "@reader.from-the-environment")
    assert cli.main(["--token", READER, "locate", "x"]) == 0  # the command line beats the environment
    assert cli.main(["locate", "x"]) == 2
    assert "give one of --token/$P2P_TOKEN and --token-file/$P2P_TOKEN_FILE" in capsys.readouterr().err


def test_a_token_file_that_is_missing_empty_or_open_to_others_is_said_in_one_line(seen, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no topology here
    assert cli.main(["--token-file", str(tmp_path / "none"), "locate", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot read" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert cli.main(["--token-file", str(empty), "locate", "x"]) == 2
    assert "must hold one credential" in capsys.readouterr().err
    shared = tmp_path / "shared.token"
    shared.write_text(READER)
    shared.chmod(0o644)
    assert cli.main(["--token-file", str(shared), "locate", "x"]) == 0
    assert capsys.readouterr().err.startswith(f"warning: {shared}: your credential is readable by others")
    assert seen == [READER]


def test_locate_and_search_never_import_grpc():
    code = (
        "import sys\n"
        "from client.cli import main\n"
        "main(['--maestro', 'http://127.0.0.1:1', '--timeout', '0.2', 'locate', 'x'])\n"
        "main(['--timeout', '0.2', 'search', 'x', '--peer', 'http://127.0.0.1:1'])\n"
        "sys.exit('grpc' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60).returncode == 0


def test_holders_prove_themselves_only_to_the_network_whose_secret_this_is():
    keys = Keys(OPERATOR, secret=SECRET).with_own(OWN)
    assert keys.for_maestro("http://10.0.0.1:9000", "http://10.0.0.1:9000", explicit=False).holder_check()
    # ./topology.yaml found, but --maestro names another Maestro: another network, whose holders know another secret
    other = keys.for_maestro("http://10.9.9.9:7000", "http://10.0.0.1:9000", explicit=False)
    assert other.holder_check() is None and other.is_own("http://10.9.9.9:7000")
    assert not other.is_own("10.0.0.2:9002") and other.peers == {}  # that topology's nodes are not these
    assert keys.for_maestro("http://10.9.9.9:7000", "http://10.0.0.1:9000", explicit=True).holder_check()
