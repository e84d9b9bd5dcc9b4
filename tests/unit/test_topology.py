"""Loading and validating topology.yaml: every problem named by its key, all at once."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from common.config import Settings
from control import topology
from control.errors import TopologyError
from tests.launcher_support import ROOT, mutate, seed_dict

HERE = Path("/nowhere/topology.yaml")


def problems_of(data) -> list[str]:
    with pytest.raises(TopologyError) as info:
        topology.parse(data, HERE)
    return info.value.problems


def test_seed_topology_file_loads_with_the_spec_ports_and_friends():
    t = topology.load(ROOT / "topology.yaml")
    assert t.maestro.url == "http://127.0.0.1:9000"
    assert [(p.name, p.rest_port, p.grpc_port, p.primary, p.backup) for p in t.peers] == [
        ("peer1", 9001, 9002, "peer2", "peer3"),
        ("peer2", 9003, 9004, "peer3", "peer1"),
        ("peer3", 9005, 9006, "peer1", "peer2"),
    ]
    for i, p in enumerate(t.peers, 1):
        assert p.shared_dir == ROOT / "data" / f"peer{i}"
        assert (p.shared_dir / f"archivo{i}.txt").read_text(encoding="utf-8").strip()
    assert t.settings == Settings()


def test_relative_shared_dir_is_relative_to_the_topology_folder_and_absolute_is_kept():
    data = mutate(seed_dict(), lambda d: d["peers"][1].update(shared_dir="/srv/p2"))
    t = topology.parse(data, Path("/a/b/net.yaml"))
    assert t.peers[0].shared_dir == Path("/a/b/data/peer1")
    assert t.peers[1].shared_dir == Path("/srv/p2")


def test_a_word_setting_takes_one_of_its_choices():
    data = mutate(seed_dict(), lambda d: d.update(settings={"rest_worker_class": "gthread"}))
    assert topology.parse(data, HERE).settings.rest_worker_class == "gthread"


def test_a_yes_no_setting_takes_true_or_false():
    data = mutate(seed_dict(), lambda d: d.update(settings={"access_log": False}))
    assert topology.parse(data, HERE).settings.access_log is False
    assert topology.parse(seed_dict(), HERE).settings.access_log is True


def test_settings_override_defaults():
    data = mutate(seed_dict(), lambda d: d.update(settings={"heartbeat_interval": 1, "rest_workers": 1}))
    s = topology.parse(data, HERE).settings
    assert s.heartbeat_interval == 1.0 and isinstance(s.heartbeat_interval, float)
    assert s.rest_workers == 1
    assert s.chunk_size == Settings().chunk_size


def test_a_heartbeat_interval_above_the_maestros_maximum_is_refused_naming_both_keys():
    data = mutate(seed_dict(), lambda d: d.update(settings={"heartbeat_interval": 90}))
    (problem,) = problems_of(data)
    assert problem.startswith("settings.heartbeat_interval:") and "settings.max_heartbeat_interval" in problem
    data = mutate(seed_dict(), lambda d: d.update(settings={"heartbeat_interval": 90, "max_heartbeat_interval": 120}))
    assert topology.parse(data, HERE).settings.max_heartbeat_interval == 120.0


def test_security_allow_hardlinks_reaches_every_node_config():
    from control import render

    data = mutate(seed_dict(), lambda d: d.update(security={"allow_hardlinks": True}))
    t = topology.parse(data, HERE)
    assert t.security.allow_hardlinks is True
    configs = render.node_configs(t, render.layout_for(t))
    assert all(c.security.allow_hardlinks for c in configs.values())
    assert topology.parse(seed_dict(), HERE).security.allow_hardlinks is False


@pytest.mark.parametrize(
    ("security", "key"),
    [
        ({"allow_hardlinks": "yes"}, "security.allow_hardlinks"),
        ({"allow_symlinks": True}, "security.allow_symlinks"),
        ("on", "security"),
    ],  # fmt: skip
)
def test_a_bad_security_section_is_named_by_its_key(security, key):
    data = mutate(seed_dict(), lambda d: d.update(security=security))
    assert [p.split(":")[0] for p in problems_of(data)] == [key]


def _set(path: str, value):
    """A mutation that sets the dotted key path (peers.1.rest_port) to value."""

    def fn(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        d[int(last) if isinstance(d, list) else last] = value

    return fn


def _del(path: str):
    def fn(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        del d[last]

    return fn


CASES = [
    (
        "duplicate-rest-port",
        _set("peers.1.rest_port", 9001),
        "peers[1].rest_port: 9001 is already used by peers[0].rest_port",
    ),
    (
        "duplicate-grpc-vs-maestro",
        _set("peers.2.grpc_port", 9000),
        "peers[2].grpc_port: 9000 is already used by maestro.port",
    ),
    (
        "duplicate-grpc-vs-rest",
        _set("peers.0.grpc_port", 9003),
        "peers[1].rest_port: 9003 is already used by peers[0].grpc_port",
    ),
    ("duplicate-name", _set("peers.2.name", "peer1"), "peers[2].name: 'peer1' is already used by peers[0].name"),
    ("unknown-friend", _set("peers.0.friends.primary", "peer9"), "peers[0].friends.primary: unknown peer 'peer9'"),
    (
        "self-friend",
        _set("peers.1.friends.backup", "peer2"),
        "peers[1].friends.backup: a peer cannot be its own friend",
    ),
    (
        "backup-same-as-primary",
        _set("peers.0.friends.backup", "peer2"),
        "peers[0].friends.backup: 'peer2' is already the primary friend",
    ),
    ("missing-peer-port", _del("peers.1.grpc_port"), "peers[1].grpc_port: missing key"),
    ("missing-friend", _del("peers.2.friends.backup"), "peers[2].friends.backup: missing key"),
    ("missing-friends", _del("peers.2.friends"), "peers[2].friends: missing key"),
    ("missing-shared-dir", _del("peers.0.shared_dir"), "peers[0].shared_dir: missing key"),
    ("missing-maestro-host", _del("maestro.host"), "maestro.host: missing key"),
    ("missing-maestro", _del("maestro"), "maestro: missing key"),
    ("missing-peers", _del("peers"), "peers: missing key"),
    ("empty-peers", _set("peers", []), "peers: must be a non-empty list of peers"),
    ("port-too-big", _set("peers.0.rest_port", 70000), "peers[0].rest_port: 70000 is out of range (1-65535)"),
    ("port-zero", _set("maestro.port", 0), "maestro.port: 0 is out of range (1-65535)"),
    ("port-not-int", _set("peers.2.grpc_port", "9006"), "peers[2].grpc_port: '9006' is not an integer port"),
    ("port-bool", _set("peers.2.grpc_port", True), "peers[2].grpc_port: True is not an integer port"),
    ("name-uppercase", _set("peers.0.name", "Peer1"), "peers[0].name: 'Peer1' does not match [a-z0-9_-]{1,64}"),
    ("name-space", _set("peers.0.name", "peer 1"), "peers[0].name: 'peer 1' does not match [a-z0-9_-]{1,64}"),
    ("name-maestro", _set("peers.0.name", "maestro"), "peers[0].name: 'maestro' is reserved for the Maestro"),
    ("unknown-peer-key", _set("peers.0.colour", "red"), "peers[0].colour: unknown key"),
    ("unknown-top-key", _set("extra", 1), "extra: unknown key"),
    ("unknown-setting", _set("settings", {"heartbeat": 1}), "settings.heartbeat: unknown setting"),
    (
        "setting-not-number",
        _set("settings", {"heartbeat_interval": "fast"}),
        "settings.heartbeat_interval: 'fast' is not a number",
    ),
    ("setting-not-int", _set("settings", {"rest_workers": 1.5}), "settings.rest_workers: 1.5 is not an integer"),
    ("setting-not-bool", _set("settings", {"access_log": "no"}), "settings.access_log: 'no' is not true or false"),
    ("setting-negative", _set("settings", {"request_timeout": -1}), "settings.request_timeout: -1 must be positive"),
    (
        "setting-unknown-choice",
        _set("settings", {"rest_worker_class": "sync"}),
        "settings.rest_worker_class: 'sync' is not one of gevent, gthread",
    ),
    ("host-empty", _set("peers.1.host", ""), "peers[1].host: '' is not a host name or address"),
    ("maestro-not-mapping", _set("maestro", "127.0.0.1:9000"), "maestro: must be a mapping"),
    ("peer-not-mapping", _set("peers.1", "peer2"), "peers[1]: must be a mapping"),
]


@pytest.mark.parametrize("mutation, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_one_line_naming_the_key(mutation, expected):
    problems = problems_of(mutate(seed_dict(), mutation))
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_collected_not_just_the_first():
    data = seed_dict()
    data["peers"][0]["rest_port"] = 9003
    data["peers"][1]["friends"]["primary"] = "ghost"
    data["peers"][2]["name"] = "Bad Name"
    del data["maestro"]["host"]
    problems = problems_of(data)
    assert len(problems) >= 4
    for key in ("peers[1].rest_port", "peers[1].friends.primary", "peers[2].name", "maestro.host"):
        assert any(p.startswith(key + ":") for p in problems), (key, problems)


def test_every_line_of_the_error_names_the_file():
    with pytest.raises(TopologyError) as info:
        topology.parse(mutate(seed_dict(), _set("maestro.port", -1)), HERE)
    assert info.value.lines() == [f"{HERE}: maestro.port: -1 is out of range (1-65535)"]


def test_missing_file_and_bad_yaml_are_one_line(tmp_path):
    with pytest.raises(TopologyError) as info:
        topology.load(tmp_path / "nope.yaml")
    assert info.value.problems == ["file not found"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("maestro: {host: x\npeers: [\n", encoding="utf-8")
    with pytest.raises(TopologyError) as info:
        topology.load(bad)
    assert len(info.value.problems) == 1 and "not valid YAML" in info.value.problems[0]


def test_document_that_is_not_a_mapping_is_refused():
    assert problems_of(yaml.safe_load("- a\n- b\n")) == ["the document must be a mapping with keys maestro and peers"]


def test_a_bound_port_is_reported_by_ports_in_use_with_its_key():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        data = mutate(seed_dict(), _set("peers.1.grpc_port", port))
        t = topology.parse(data, HERE)
        assert topology.port_in_use("127.0.0.1", port)
        assert f"peers[1].grpc_port: 127.0.0.1:{port} is already in use" in topology.ports_in_use(t)
    assert not topology.port_in_use("127.0.0.1", port)
