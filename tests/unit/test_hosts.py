"""One topology over several hosts (docs/operations.md): bind vs host, which nodes run here, a run folder per host.

198.51.100.0/24 (TEST-NET-2) stands for other machines: nodes there are "remote" (checked below,
since documentation ranges do turn up on real interfaces: this very machine has 192.0.2.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import launcher
from common.net import is_local_address
from control import render, topology
from control.errors import TopologyError
from control.generate import generate
from tests.launcher_support import mutate, seed_dict

HERE = Path("/net/topology.yaml")
FAKE_ROOT = Path("/proj")
REMOTE_B, REMOTE_C = "198.51.100.2", "198.51.100.3"


@pytest.fixture(autouse=True)
def _remote_addresses_are_not_ours():
    if is_local_address(REMOTE_B) or is_local_address(REMOTE_C):
        pytest.skip(f"{REMOTE_B} or {REMOTE_C} is an address of this machine")


def split(data: dict) -> dict:
    """The seed network with peer2 on host B and peer3 on host C (the Maestro and peer1 stay here)."""

    def fn(d):
        d["peers"][1]["host"] = REMOTE_B
        d["peers"][2]["host"] = REMOTE_C

    return mutate(data, fn)


def test_bind_is_optional_and_defaults_to_host():
    data = mutate(seed_dict(), lambda d: d["peers"][0].update(bind="0.0.0.0", host="203.0.113.7"))
    t = topology.parse(data, HERE)
    assert (t.peers[0].listen, t.peers[0].rest_url) == ("0.0.0.0", "http://203.0.113.7:9001")
    assert (t.peers[1].listen, t.maestro.listen) == ("127.0.0.1", "127.0.0.1")
    config = render.render(t, FAKE_ROOT).configs[render.layout_for(t).config_path("peer1")]
    assert (config.rest_bind, config.grpc_bind, config.grpc_address) == (
        "0.0.0.0:9001",
        "0.0.0.0:9002",
        "203.0.113.7:9002",
    )


def test_a_bad_bind_is_named_by_its_key():
    data = mutate(seed_dict(), lambda d: d["maestro"].update(bind="two words"))
    with pytest.raises(TopologyError) as info:
        topology.parse(data, HERE)
    assert info.value.problems == ["maestro.bind: 'two words' is not a host name or address"]


def test_ports_are_unique_per_host_not_across_hosts():
    data = split(seed_dict())
    data["peers"][1].update(rest_port=9001, grpc_port=9002)  # B uses peer1's ports: another machine
    topology.parse(data, HERE)
    data["peers"][2].update(host=REMOTE_B, rest_port=9001)  # C moves to B: a clash on B
    with pytest.raises(TopologyError) as info:
        topology.parse(data, HERE)
    assert info.value.problems == ["peers[2].rest_port: 9001 is already used by peers[1].rest_port"]


def test_auto_runs_the_nodes_whose_address_is_on_this_machine_in_a_run_folder_of_their_own():
    t = topology.on_this_host(topology.parse(split(seed_dict()), HERE))
    assert t.local_names == ["maestro", "peer1"]
    r = render.render(t, FAKE_ROOT)
    assert r.layout.run_dir == Path("/net/.run/topology@127.0.0.1")
    assert sorted({p.node for p in r.processes}) == ["maestro", "peer1"]
    assert sorted(p.name for p in r.configs) == ["maestro.json", "peer1.json"]
    assert Path("/net/data/peer2") not in r.dirs
    assert r.configs[r.layout.config_path("peer1")].friends["primary"].rest_url == f"http://{REMOTE_B}:9003"


def test_a_single_machine_topology_is_unchanged():
    t = topology.parse(seed_dict(), HERE)
    assert topology.on_this_host(t) is t
    assert render.render(t, FAKE_ROOT).layout.run_dir == Path("/net/.run/topology")


def test_host_addr_picks_the_nodes_advertised_there_and_refuses_them_when_not_local():
    t = topology.on_this_host(topology.parse(split(seed_dict()), HERE), REMOTE_B)
    assert t.local_names == ["peer2"] and t.host_label == REMOTE_B
    assert topology.unbindable(t) == [
        f"peers[1].host: {REMOTE_B} is not an address of this machine: run `launcher.py up` on that host "
        "(behind NAT: set peers[1].bind, e.g. 0.0.0.0)"
    ]


def test_behind_nat_the_advertised_address_with_a_wildcard_bind_can_be_started():
    data = mutate(split(seed_dict()), lambda d: d["peers"][1].update(bind="0.0.0.0"))
    t = topology.on_this_host(topology.parse(data, HERE), REMOTE_B)
    assert t.local_names == ["peer2"] and topology.unbindable(t) == []
    assert t.contact_host("peer2") == "127.0.0.1"  # probed locally, whatever NAT does to B's address


def test_no_local_node_is_refused_with_the_hosts_to_run_up_on():
    data = mutate(
        split(seed_dict()), lambda d: (d["maestro"].update(host=REMOTE_B), d["peers"][0].update(host=REMOTE_C))
    )
    t = topology.parse(data, HERE)
    with pytest.raises(TopologyError) as info:
        topology.on_this_host(t)
    assert f"hosts: {REMOTE_B}, {REMOTE_C}" in info.value.problems[0]
    assert topology.on_this_host(t, require=False).local_names == []


@pytest.fixture
def split_file(tmp_path) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(split(seed_dict())), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "kill", "logs"])
def test_verbs_on_a_remote_node_exit_2_naming_its_host(split_file, verb):
    result = CliRunner().invoke(launcher.cli, [verb, "peer2", "-t", split_file], catch_exceptions=False)
    assert result.exit_code == 2
    assert f"peer2 runs on {REMOTE_B}, not on this machine: run `launcher.py {verb} peer2` on {REMOTE_B}" in (
        result.stderr
    )


def test_up_for_another_hosts_address_starts_nothing(split_file, tmp_path):
    result = CliRunner().invoke(launcher.cli, ["up", split_file, "--host", REMOTE_C], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("(behind NAT: set peers[2].bind, e.g. 0.0.0.0)")
    assert "peers[2].host: 198.51.100.3 is not an address of this machine" in result.stderr
    assert not (tmp_path / ".run").exists()


def test_generate_hosts_spreads_peers_so_ring_friends_live_elsewhere():
    doc = generate(6, list(range(9100, 9113)), hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    hosts = {p["name"]: p["host"] for p in doc["peers"]}
    assert doc["maestro"]["host"] == "10.0.0.1"
    assert [hosts[f"peer{i}"] for i in range(1, 7)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] * 2
    for p in doc["peers"]:
        assert hosts[p["friends"]["primary"]] != p["host"] and hosts[p["friends"]["backup"]] != p["host"]
    topology.parse(doc, HERE)


def test_generate_hosts_on_the_command_line(tmp_path):
    out = tmp_path / "net.yaml"
    result = CliRunner().invoke(
        launcher.cli,
        ["generate", "-n", "3", "--hosts", "10.0.0.1, 10.0.0.2,10.0.0.3", "--base-port", "9100", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert [p.host for p in topology.load(out).peers] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
