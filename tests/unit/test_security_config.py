"""The `security:` section from topology to node configs, the secret and TLS files, and the client's view of them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import launcher
from client.topology import client_network, find_topology, read_network
from common.config import NodeConfig
from common.security import Guard, operator_token, read_secret
from control import render, topology
from control.errors import TopologyError
from control.processes import node_programs
from tests.launcher_support import seed_dict


def write_topology(folder: Path, security: dict | None = None) -> Path:
    data = seed_dict()
    if security is not None:
        data["security"] = security
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_section_is_optional_with_documented_defaults(tmp_path):
    t = topology.load(write_topology(tmp_path))
    assert t.security.secret_file == tmp_path / ".p2p-secret"
    assert (t.security.trusted_networks, t.security.read, t.security.tls) == (("127.0.0.0/8", "::1/128"), "open", False)
    assert t.maestro.url == "http://127.0.0.1:9000"
    assert (t.security.allowed_hosts, t.security.local_operator) == ((), "owner")


def test_allowed_hosts_and_local_operator_reach_every_nodes_config(tmp_path):
    hosts = ["P2P.Example.org.", "maestro.p2p.svc.cluster.local", "p2p.example.org"]
    t = topology.load(write_topology(tmp_path, {"allowed_hosts": hosts, "local_operator": "any"}))
    assert t.security.allowed_hosts == ("p2p.example.org", "maestro.p2p.svc.cluster.local")
    rendered = render.render(t, Path("/proj"))
    render.write(rendered)
    for config_path in rendered.configs:
        security = NodeConfig.from_json(json.loads(config_path.read_text())).security
        assert (security.allowed_hosts, security.local_operator) == (t.security.allowed_hosts, "any")


def test_allowed_hosts_and_local_operator_problems_name_the_key(tmp_path):
    bad = {"allowed_hosts": ["ok.example.org", "maestro:9000", 7, "*.example.org"], "local_operator": "root"}
    with pytest.raises(TopologyError) as err:
        topology.load(write_topology(tmp_path, bad))
    keys = [line.split(": ", 1)[1].split(":")[0] for line in err.value.lines()]
    assert keys == [
        "security.allowed_hosts[1]",
        "security.allowed_hosts[2]",
        "security.allowed_hosts[3]",
        "security.local_operator",
    ]
    with pytest.raises(TopologyError) as err:
        topology.load(write_topology(tmp_path, {"allowed_hosts": "p2p.example.org"}))
    assert "security.allowed_hosts: must be a list" in err.value.lines()[0]


def test_every_problem_of_the_section_is_one_line_naming_the_key(tmp_path):
    bad = {"secret_file": 7, "trusted_networks": ["10.0.0.1/8", 5, "fe80::/10"], "read": "all", "tls": "yes", "x": 1}
    with pytest.raises(TopologyError) as err:
        topology.load(write_topology(tmp_path, bad))
    lines = [line.split(": ", 1)[1] for line in err.value.lines()]
    assert [line.split(":")[0] for line in lines] == [
        "security.x",
        "security.secret_file",
        "security.trusted_networks[0]",
        "security.trusted_networks[1]",
        "security.read",
        "security.tls",
    ]


def test_render_creates_the_secret_once_and_configs_carry_only_its_path(tmp_path):
    path = write_topology(tmp_path, {"secret_file": "keys/net.secret", "read": "members", "trusted_networks": []})
    t = topology.load(path)
    rendered = render.render(t, Path("/proj"))
    render.write(rendered)
    secret_file = tmp_path / "keys" / "net.secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    secret = read_secret(secret_file)
    render.write(render.render(t, Path("/proj")))  # never replaced
    assert read_secret(secret_file) == secret
    for config_path in rendered.configs:
        text = config_path.read_text()
        assert secret.decode() not in text
        security = json.loads(text)["security"]
        assert (security["secret_file"], security["read"], security["trusted_networks"]) == (
            str(secret_file),
            "members",
            [],
        )
        assert NodeConfig.from_json(json.loads(text)).security.trusted_networks == ()


def test_tls_makes_https_urls_certificates_and_gunicorn_arguments(tmp_path):
    t = topology.load(write_topology(tmp_path, {"tls": True}))
    rendered = render.render(t, Path("/proj"))
    render.write(rendered)
    tls = tmp_path / ".run" / "topology" / "tls"
    assert {p.name for p in tls.iterdir()} == {"ca.pem"} | {f"{n}.{e}" for n in t.node_names for e in ("pem", "key")}
    assert stat.S_IMODE(os.stat(tls / "peer1.key").st_mode) == 0o600
    configs = {c.name: c for c in rendered.configs.values()}
    assert configs["peer1"].rest_url == "https://127.0.0.1:9001"
    assert configs["peer1"].maestro_url == "https://127.0.0.1:9000"
    assert configs["peer1"].friends["primary"].rest_url == "https://127.0.0.1:9003"
    argv = node_programs(configs["peer1"], "/x.json")["peer1-rest"]
    assert argv[argv.index("--certfile") + 1] == str(tls / "peer1.pem")


def test_launcher_token_prints_the_operators_credential(tmp_path):
    path = write_topology(tmp_path)
    result = CliRunner().invoke(launcher.cli, ["token", str(path)], catch_exceptions=False)
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token == operator_token(read_secret(tmp_path / ".p2p-secret"))
    assert Guard(read_secret(tmp_path / ".p2p-secret")).identify(token) == "@operator"
    peer = CliRunner().invoke(launcher.cli, ["token", str(path), "--peer", "peer2"], catch_exceptions=False)
    assert peer.stdout.startswith("peer2.")
    assert CliRunner().invoke(launcher.cli, ["token", str(path), "--peer", "nobody"]).exit_code == 2


def test_the_client_finds_the_topology_and_derives_the_operators_token(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    write_topology(here)
    write_topology(there, {"tls": True, "secret_file": "s.secret"})
    render.write(render.render(topology.load(here / "topology.yaml"), Path("/proj")))
    render.write(render.render(topology.load(there / "topology.yaml"), Path("/proj")))
    monkeypatch.delenv("P2P_TOPOLOGY", raising=False)
    monkeypatch.chdir(here)
    assert find_topology() == here / "topology.yaml"
    monkeypatch.setenv("P2P_TOPOLOGY", str(there / "topology.yaml"))
    assert find_topology() == there / "topology.yaml"
    assert find_topology(str(here / "topology.yaml")) == here / "topology.yaml"  # --topology wins
    view = read_network(there / "topology.yaml")
    assert view is not None
    assert (view.maestro_url, view.secret_file) == ("https://127.0.0.1:9000", there / "s.secret")
    creds = client_network(None)[1]
    assert creds.token == operator_token(read_secret(there / "s.secret"))
    assert creds.ca_file == str(there / ".run" / "topology" / "tls" / "ca.pem")
    assert client_network("mine")[1].token == "mine"  # --token / P2P_TOKEN win
    monkeypatch.delenv("P2P_TOPOLOGY")
    monkeypatch.chdir(tmp_path)  # no topology here: no token, plain connections
    assert (client_network(None)[1].token, client_network(None)[1].ca_file) == (None, None)
