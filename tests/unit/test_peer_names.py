"""One peer-name rule (common/names.py) everywhere a name enters: topology, Maestro, peer /register."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import BadRequest
from control import topology
from control.errors import TopologyError
from maestro_app.directory import Directory
from tests.launcher_support import seed_dict
from tests.support import FakePeers

NAMES = [
    ("plain", "peer1", True),
    ("dash-underscore", "edge_node-2", True),
    ("64-characters", "p" * 64, True),
    ("70-characters", "p" * 70, False),
    ("uppercase", "Peer1", False),
    ("space", "peer 1", False),
    ("trailing-newline", "peer1\n", False),
    ("empty", "", False),
]


def topology_accepts(name: str) -> bool:
    data = seed_dict()
    data["peers"][0]["name"] = name
    for peer in data["peers"][1:]:
        peer["friends"] = {role: (name if f == "peer1" else f) for role, f in peer["friends"].items()}
    try:
        topology.parse(data, Path("/nowhere/topology.yaml"))
    except TopologyError:
        return False
    return True


def maestro_accepts(tmp_path: Path, name: str) -> bool:
    directory = Directory(str(tmp_path / "m.sqlite3"), default_interval=2.0, expire_after_beats=3.0)
    try:
        directory.register(name, "http://127.0.0.1:1", "127.0.0.1:2", [])
    except BadRequest:
        return False
    return True


def peer_accepts(peer_config, name: str) -> bool:
    from peer_app import create_app

    # the registered URL answers as a peer of that name (a learned peer's name is the one it proves)
    peer = create_app(peer_config, transport=FakePeers({"http://127.0.0.1:1": name})).test_client()
    answer = peer.post("/register", json={"url": "http://127.0.0.1:1", "name": name})
    assert answer.status_code in (200, 400), answer.get_json()
    return answer.status_code == 200


@pytest.mark.parametrize(("name", "valid"), [(n, v) for _, n, v in NAMES], ids=[i for i, _, _ in NAMES])
def test_every_entry_point_applies_the_same_peer_name_rule(tmp_path, peer_config, name, valid):
    accepted = (topology_accepts(name), maestro_accepts(tmp_path, name), peer_accepts(peer_config, name))
    assert accepted == (valid,) * 3
