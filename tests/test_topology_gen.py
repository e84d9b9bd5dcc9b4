"""generate_topology: SPEC §2 documents for N peers, ring or random friends."""
from __future__ import annotations

import pytest

from control.topology_gen import generate_topology


def friends(doc: dict) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["friends"]["primary"], p["friends"]["backup"]) for p in doc["peers"]}


def test_ring_friends_are_the_next_two_peers():
    doc = generate_topology(5, base_port=20000)
    assert friends(doc) == {"peer1": ("peer2", "peer3"), "peer2": ("peer3", "peer4"),
                            "peer3": ("peer4", "peer5"), "peer4": ("peer5", "peer1"),
                            "peer5": ("peer1", "peer2")}


def test_ports_follow_the_base_without_repeats():
    doc = generate_topology(3, base_port=20000, host="10.0.0.1")
    assert doc["maestro"] == {"host": "10.0.0.1", "port": 20000}
    assert [(p["rest_port"], p["grpc_port"]) for p in doc["peers"]] == [(20001, 20002), (20003, 20004),
                                                                        (20005, 20006)]
    assert {p["host"] for p in doc["peers"]} == {"10.0.0.1"}
    assert doc["peers"][0]["shared_dir"] == "data/peer1"


def test_free_ports_are_distinct():
    doc = generate_topology(30)
    ports = [doc["maestro"]["port"]] + [port for p in doc["peers"] for port in (p["rest_port"], p["grpc_port"])]
    assert len(set(ports)) == 61 and all(1024 <= port <= 65535 for port in ports)


@pytest.mark.parametrize("seed", range(20))
def test_random_friends_are_two_distinct_other_peers(seed):
    doc = generate_topology(4, ring=False, seed=seed, base_port=20000)
    for name, (primary, backup) in friends(doc).items():
        assert len({name, primary, backup}) == 3
        assert primary in friends(doc) and backup in friends(doc)


def test_random_friends_are_reproducible_with_a_seed():
    one, two = (generate_topology(30, ring=False, seed=7, base_port=20000) for _ in range(2))
    assert one == two
    assert friends(one) != friends(generate_topology(30, ring=True, base_port=20000))


@pytest.mark.parametrize("kwargs", [{"n": 2}, {"n": 0}, {"n": 3, "base_port": 65530}, {"n": 3, "base_port": 0}],
                         ids=["two-peers", "no-peers", "ports-past-65535", "port-zero"])
def test_impossible_requests_are_refused(kwargs):
    with pytest.raises(ValueError):
        generate_topology(**kwargs)
