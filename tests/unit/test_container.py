"""The image's entrypoint (control/container.py): which node a container runs, from its environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.config import load_config
from control import engines
from control.container import ContainerError, node_config, programs_for, role_config, run_as
from control.topology import parse
from tests.unit.test_engines import seed


@pytest.fixture
def mounted(tmp_path: Path) -> Path:
    """The container topology compose renders, as a container finds it at its mount point."""
    files = engines.render_compose(parse(seed(), tmp_path / "topology.yaml"), tmp_path / "deploy")
    path = tmp_path / "etc" / "topology.yaml"
    path.parent.mkdir()
    path.write_text(files.texts["topology.yaml"])
    return path


def env_for(mounted: Path, node: str, tmp_path: Path, **more: str) -> dict[str, str]:
    return {"P2P_TOPOLOGY": str(mounted), "P2P_NODE": node, "P2P_STATE_DIR": str(tmp_path / "state"), **more}


def test_a_node_from_the_topology_keeps_its_run_folder_on_the_state_volume_not_beside_the_topology(mounted, tmp_path):
    config = node_config(env_for(mounted, "peer2", tmp_path))
    assert (config.name, config.role, config.host, config.bind) == ("peer2", "peer", "127.0.0.1", "0.0.0.0")
    assert config.run_dir == str(tmp_path / "state" / "run")
    assert (config.rest_port, config.grpc_port, config.lane_port) == (9003, 9004, 9008)
    assert config.friends["primary"].rest_url == "http://127.0.0.1:9005"
    assert config.security.secret_file == "/run/secrets/p2pnet_secret"
    assert not (mounted.parent / ".run").exists()


def test_the_environment_adds_names_the_node_answers_to(mounted, tmp_path):
    config = node_config(env_for(mounted, "maestro", tmp_path, P2P_ALLOWED_HOSTS="maestro, maestro.p2p ,"))
    assert config.security.allowed_hosts == ("maestro", "maestro.p2p")


def test_an_unknown_node_names_the_nodes_there_are(mounted, tmp_path):
    with pytest.raises(ContainerError, match=r"P2P_NODE='peer9' is not a node .*maestro, peer1, peer2, peer3"):
        node_config(env_for(mounted, "peer9", tmp_path))


def test_a_missing_topology_says_where_to_mount_one(tmp_path):
    with pytest.raises(ContainerError, match=r"no topology at .*: mount one there .* or P2P_CONFIG to a rendered"):
        node_config({"P2P_TOPOLOGY": str(tmp_path / "nowhere.yaml"), "P2P_NODE": "peer1"})


def test_a_bad_topology_says_what_is_wrong(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump({"maestro": {"host": "x"}}))
    with pytest.raises(ContainerError, match="maestro.port: missing key"):
        node_config({"P2P_TOPOLOGY": str(path), "P2P_NODE": "maestro"})


def test_a_rendered_config_comes_as_a_path_or_as_the_json_itself(mounted, tmp_path, make_config):
    config = make_config("peer", name="peer7")
    text = json.dumps(config.to_json())
    path = tmp_path / "peer7.json"
    path.write_text(text)
    assert node_config({"P2P_CONFIG": text}) == config == node_config({"P2P_CONFIG": str(path)})
    assert load_config(text) == config
    with pytest.raises(ContainerError, match="P2P_CONFIG: not a node config"):
        node_config({"P2P_CONFIG": str(tmp_path / "missing.json")})


def test_each_role_runs_its_own_sides(mounted, tmp_path):
    peer = node_config(env_for(mounted, "peer1", tmp_path))
    maestro = node_config(env_for(mounted, "maestro", tmp_path))
    assert list(programs_for(peer, "node", "c.json")) == ["peer1-rest", "peer1-grpc"]
    assert list(programs_for(peer, "peer", "c.json")) == ["peer1-rest", "peer1-grpc"]
    assert list(programs_for(peer, "grpc", "c.json")) == ["peer1-grpc"]
    assert list(programs_for(maestro, "node", "c.json")) == list(programs_for(maestro, "maestro", "c.json"))
    with pytest.raises(ContainerError, match="role 'rest' does not fit maestro"):
        programs_for(maestro, "rest", "c.json")


def test_two_containers_of_a_pod_never_share_tls_files(mounted, tmp_path, make_config):
    config = make_config("peer")
    tls = config.__class__.from_json({**config.to_json(), "security": {"tls": True}})
    assert role_config(tls, "rest").security.tls_dir != role_config(tls, "grpc").security.tls_dir
    assert role_config(config, "rest") == config


def test_servers_never_run_as_root():
    assert run_as({}) == (10001, 10001)
    assert run_as({"P2P_RUN_AS": "1000:1001"}) == (1000, 1001)
    for bad in ("0:0", "1000:0", "me"):
        with pytest.raises(ContainerError, match="P2P_RUN_AS"):
            run_as({"P2P_RUN_AS": bad})
