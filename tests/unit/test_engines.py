"""The topology mapped onto compose and Kubernetes (control/engines.py): pure rendering, no engine needed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from common.security import DEFAULT_SECRET_FILE
from control import engines
from control.container import APP_UID, SEED_DIR, STATE_DIR, TOPOLOGY_PATH
from control.errors import TopologyError
from control.topology import on_this_host, parse
from tests.support import ROOT

SEED = {
    "maestro": {"host": "127.0.0.1", "port": 9000},
    "peers": [
        {
            "name": f"peer{i}",
            "host": "127.0.0.1",
            "rest_port": 9000 + 2 * i - 1,
            "grpc_port": 9000 + 2 * i,
            "shared_dir": f"data/peer{i}",
            "friends": {"primary": f"peer{i % 3 + 1}", "backup": f"peer{(i + 1) % 3 + 1}"},
        }
        for i in (1, 2, 3)
    ],
}
FOLDER = Path("/srv/net")


def seed(**changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(SEED))
    for i, peer in changes.pop("peers", {}).items():
        doc["peers"][i].update(peer)
    doc.update(changes)
    return doc


def topology(doc: dict | None = None):
    return parse(doc or seed(), FOLDER / "topology.yaml")


def compose(doc: dict | None = None, out: Path = FOLDER / "deploy"):
    files = engines.render_compose(topology(doc), out, image="p2pnet:test")
    return yaml.safe_load(files.texts["compose.yaml"]), yaml.safe_load(files.texts["topology.yaml"]), files


def kube(doc: dict | None = None, secret: bytes = b"s" * 64, namespace: str = "p2pnet"):
    files = engines.render_kubernetes(topology(doc), FOLDER / "k8s", secret, image="p2pnet:test", namespace=namespace)
    manifests = list(yaml.safe_load_all(files.texts["p2pnet.yaml"]))
    return manifests, yaml.safe_load(files.texts["secret.yaml"]), files


def find(manifests: list[dict], kind: str, name: str) -> dict:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


# --- lane ports and the container topology ------------------------------------------------------


def test_peers_without_a_lane_port_get_the_next_numbers_after_the_topologys_highest_port():
    assert engines.lane_ports(topology()) == {"peer1": 9007, "peer2": 9008, "peer3": 9009}


def test_a_given_lane_port_is_kept_and_never_handed_out_twice():
    doc = seed(peers={0: {"lane_port": 9008}})
    assert engines.lane_ports(topology(doc)) == {"peer1": 9008, "peer2": 9009, "peer3": 9010}


def test_lane_port_is_validated_like_the_other_ports():
    with pytest.raises(TopologyError) as err:
        topology(seed(peers={0: {"lane_port": 9003}, 1: {"lane_port": 70000}}))
    assert "peers[1].rest_port: 9003 is already used by peers[0].lane_port" in err.value.problems
    assert any(p.startswith("peers[1].lane_port: 70000 is out of range") for p in err.value.problems)


def test_a_lane_port_is_checked_for_use_by_up_like_the_others():
    keys = [key for key, _, _ in topology(seed(peers={0: {"lane_port": 9100}})).ports()]
    assert "peers[0].lane_port" in keys


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_the_container_topology_is_a_valid_topology_with_the_same_names_ports_and_friends(target):
    doc = seed(settings={"heartbeat_interval": 1.0})
    if target == "compose":
        _, inside, _ = compose(doc)
    else:
        manifests, _, _ = kube(doc)
        inside = yaml.safe_load(find(manifests, "ConfigMap", "p2pnet-topology")["data"]["topology.yaml"])
    t, original = parse(inside, Path(TOPOLOGY_PATH)), topology(doc)
    assert [(p.name, p.rest_port, p.grpc_port, p.primary, p.backup) for p in t.peers] == [
        (p.name, p.rest_port, p.grpc_port, p.primary, p.backup) for p in original.peers
    ]
    assert t.maestro.port == 9000 and t.settings == original.settings
    assert {p.bind for p in t.peers} == {"0.0.0.0"} and t.maestro.bind == "0.0.0.0"
    assert [p.lane_port for p in t.peers] == [9007, 9008, 9009]
    assert {str(p.shared_dir) for p in t.peers} == {f"{STATE_DIR}/shared"}
    assert str(t.security.secret_file).startswith("/run/secrets/")


# --- compose -------------------------------------------------------------------------------------


def test_compose_has_one_service_per_node_beside_the_namespace_holder():
    services, _, _ = compose()
    assert list(services["services"]) == ["net", "maestro", "peer1", "peer2", "peer3"]
    for node in ("maestro", "peer1", "peer2", "peer3"):
        service = services["services"][node]
        assert service["network_mode"] == "service:net"
        assert service["restart"] == "unless-stopped"
        assert service["command"] == ["node"] and service["image"] == "p2pnet:test"
        assert service["environment"]["P2P_NODE"] == node
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "control.container", "health"]


def test_compose_publishes_every_port_on_the_address_the_topology_gives_and_advertises_the_topologys_host():
    services, inside, _ = compose()
    ports = services["services"]["net"]["ports"]
    wanted = [9000, 9001, 9002, 9007, 9003, 9004, 9008, 9005, 9006, 9009]
    assert ports == [f"127.0.0.1:{p}:{p}" for p in wanted]
    assert {p["host"] for p in inside["peers"]} == {"127.0.0.1"}  # what clients on the host reach
    assert "ports" not in services["services"]["peer1"]


def test_compose_publishes_on_every_interface_for_a_wildcard_bind():
    doc = seed(maestro={"host": "203.0.113.7", "bind": "0.0.0.0", "port": 9000})
    services, inside, _ = compose(doc)
    assert services["services"]["net"]["ports"][0] == "9000:9000"
    assert inside["maestro"]["host"] == "203.0.113.7"


def test_compose_publishes_localhost_on_loopback_only():
    services, _, _ = compose(seed(maestro={"host": "localhost", "port": 9000}))
    assert services["services"]["net"]["ports"][0] == "127.0.0.1:9000:9000"


def test_compose_keeps_state_on_named_volumes_and_seeds_from_the_shared_folder_read_only():
    services, _, _ = compose()
    assert set(services["volumes"]) == {"maestro-state", "peer1-state", "peer2-state", "peer3-state"}
    volumes = services["services"]["peer2"]["volumes"]
    assert "peer2-state:/var/lib/p2pnet" in volumes
    assert f"./topology.yaml:{TOPOLOGY_PATH}:ro" in volumes
    [seed_mount] = [v for v in volumes if SEED_DIR in v]
    source = seed_mount.split(":")[0]
    assert (FOLDER / "deploy" / source).resolve() == FOLDER / "data" / "peer2" and seed_mount.endswith(":ro")


def test_compose_takes_the_secret_from_the_topologys_file_never_from_the_environment():
    services, _, files = compose()
    secret = services["secrets"]["p2pnet_secret"]["file"]
    assert (FOLDER / "deploy" / secret).resolve() == FOLDER / DEFAULT_SECRET_FILE
    for service in services["services"].values():
        assert not any("secret" in k.lower() for k in service.get("environment", {}))
    assert not files.private  # compose.yaml names the file; it holds no secret


def test_compose_renders_only_this_hosts_nodes():
    doc = seed(peers={2: {"host": "192.0.2.50"}})
    t = on_this_host(topology(doc), "127.0.0.1")
    services = yaml.safe_load(engines.render_compose(t, FOLDER / "d").texts["compose.yaml"])
    assert "peer3" not in services["services"] and "peer1" in services["services"]
    assert not any(p.startswith("192.0.2.50") for p in services["services"]["net"]["ports"])


# --- kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_kubernetes_manifests_validate_strictly_against_a_current_api(tls):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    manifests, secret, _ = kube(seed(security={"tls": tls}))
    for manifest in [*manifests, secret]:
        # the newest Kubernetes the pinned schemas know (1.37 today); gRPC probes are GA since 1.27
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_has_a_namespace_configmap_secret_and_a_service_and_statefulset_per_node():
    manifests, secret, files = kube()
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert kinds[:2] == [("Namespace", "p2pnet"), ("ConfigMap", "p2pnet-topology")]
    for node in ("maestro", "peer1", "peer2", "peer3"):
        assert ("Service", node) in kinds and ("StatefulSet", node) in kinds
        assert find(manifests, "StatefulSet", node)["spec"]["serviceName"] == node
    assert secret["kind"] == "Secret" and base64.b64decode(secret["data"]["secret"]) == b"s" * 64
    assert files.private == {"secret.yaml"}
    assert b"s" * 64 not in files.texts["p2pnet.yaml"].encode()


def test_kubernetes_nodes_advertise_their_services_dns_names_and_accept_them_as_hosts():
    manifests, _, _ = kube(namespace="p2p")
    inside = yaml.safe_load(find(manifests, "ConfigMap", "p2pnet-topology")["data"]["topology.yaml"])
    assert inside["maestro"]["host"] == "maestro.p2p.svc.cluster.local"
    assert [p["host"] for p in inside["peers"]] == [f"peer{i}.p2p.svc.cluster.local" for i in (1, 2, 3)]
    service = find(manifests, "Service", "peer2")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"rest": 9003, "grpc": 9004, "lane": 9008}
    env = {
        e["name"]: e["value"]
        for e in find(manifests, "StatefulSet", "peer2")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["P2P_ALLOWED_HOSTS"].split(",") == ["peer2", "peer2.p2p", "peer2.p2p.svc", "peer2.p2p.svc.cluster.local"]


def test_a_peer_pod_runs_rest_and_grpc_containers_sharing_one_state_volume_with_probes():
    manifests, _, _ = kube()
    spec = find(manifests, "StatefulSet", "peer1")["spec"]
    pod = spec["template"]["spec"]
    rest, grpc = pod["containers"]
    assert (rest["name"], rest["args"], grpc["name"], grpc["args"]) == ("rest", ["rest"], "grpc", ["grpc"])
    for container in (rest, grpc):
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["state"]["mountPath"] == STATE_DIR
        assert mounts["topology"]["readOnly"] and mounts["secret"]["readOnly"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = rest[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/health", 9001)
        assert get["httpHeaders"] == [{"name": "Host", "value": "peer1.p2pnet.svc.cluster.local"}]
        assert grpc[probe]["grpc"] == {"port": 9002}
    assert pod["securityContext"]["runAsUser"] == APP_UID and pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret"]["secret"]["secretName"] == "p2pnet-secret"
    assert volumes["topology"]["configMap"]["name"] == "p2pnet-topology"


def test_with_tls_the_probes_speak_tls():
    manifests, _, _ = kube(seed(security={"tls": True}))
    rest, grpc = find(manifests, "StatefulSet", "peer1")["spec"]["template"]["spec"]["containers"]
    assert rest["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert grpc["livenessProbe"]["exec"]["command"] == ["python", "-m", "control.container", "health", "grpc"]


def test_the_maestro_pod_is_one_container_probed_on_health():
    manifests, _, _ = kube()
    [maestro] = find(manifests, "StatefulSet", "maestro")["spec"]["template"]["spec"]["containers"]
    assert maestro["args"] == ["maestro"] and maestro["readinessProbe"]["httpGet"]["port"] == 9000


def test_names_kubernetes_cannot_take_are_refused_with_the_key():
    doc = seed(peers={1: {"name": "peer_2"}, 0: {"friends": {"primary": "peer_2", "backup": "peer3"}}})
    doc["peers"][2]["friends"]["backup"] = "peer_2"
    with pytest.raises(TopologyError) as err:
        kube(doc, namespace="P2P")
    assert any(p.startswith("peers[1].name: 'peer_2' cannot name a Kubernetes Service") for p in err.value.problems)
    assert any(p.startswith("--namespace: 'P2P'") for p in err.value.problems)


# --- the image -------------------------------------------------------------------------------------


def test_the_image_never_carries_the_secret_run_folders_or_shared_files():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (f"**/{DEFAULT_SECRET_FILE}", "**/.run", "data", ".git", "tests"):
        assert pattern in ignored


def test_the_images_account_is_the_one_the_manifests_run_as():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG P2P_UID={APP_UID}" in dockerfile
    assert "ARG BASE=python:3.11" in dockerfile and "\nUSER " in dockerfile and "HEALTHCHECK" in dockerfile


def test_writing_keeps_the_kubernetes_secret_private(tmp_path):
    files = engines.render_kubernetes(topology(), tmp_path / "k8s", b"x" * 64)
    paths = {p.name: p for p in engines.write(files)}
    assert paths["secret.yaml"].stat().st_mode & 0o777 == 0o600
    assert paths["p2pnet.yaml"].stat().st_mode & 0o777 == 0o644
