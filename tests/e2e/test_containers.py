"""The seed network in containers: the one image, `launcher.py render --target compose`, a real engine.

No registry is reachable from these machines, so the test makes its own base (Debian bookworm by
debootstrap, with Debian's python3 and python3-venv), imports it, and builds the project's image
on it with `--build-arg BASE=...`. The base trusts this machine's extra CA certificates (HTTPS
from inside a build passes a re-signing proxy here); the image users build from the default base
never carries them.

It runs its own dockerd (Debian's docker.io) with a data root, exec root, pidfile and socket of
its own, and leaves the host's firewall alone (`--iptables=false --ip-forward=false`): clients on
this machine reach the published ports through docker-proxy on 127.0.0.1, the nodes reach each
other inside the one network namespace they share (control/engines.py says why), and nothing
in a container needs the outside. Its bridge takes addresses from 10.211.0.0/16, which only this
test uses. Everything it starts is stopped and removed at the end.

Root only (it starts dockerd and debootstraps); skipped with the reason elsewhere. Set
P2P_TEST_BASE_TAR to a rootfs tarball made earlier to skip debootstrap while developing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from control.generate import free_ports
from tests.support import ROOT, wait_until

TOOLS = ("dockerd", "docker", "docker-compose", "debootstrap")
ADDRESS_POOL = "10.211.0.0/16"
PROJECT = "p2pcontainers"
UID = 10001
FIGURES: dict[str, str] = {}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (starts its own dockerd and debootstraps a base image)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian's docker.io, docker-compose, debootstrap; .ci/run installs them)"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")


def run(*argv: str, env: dict | None = None, timeout: float = 120, check: bool = True, **kwargs):
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def timed(name: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = run(*argv, **kwargs)
    FIGURES[name] = f"{time.monotonic() - started:.1f} s"
    return done


# --- the engine --------------------------------------------------------------------------------------


def _mounts_under(folder: str) -> list[str]:
    with open("/proc/mounts") as fh:
        points = [line.split()[1] for line in fh]
    return sorted((p for p in points if p.startswith(folder + "/")), key=len, reverse=True)


@pytest.fixture(scope="module")
def docker():
    """A dockerd of our own; yields the environment that points docker and docker-compose at it."""
    root = tempfile.mkdtemp(prefix="p2pdock-", dir="/tmp")
    sock = f"{root}/docker.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    log = open(f"{root}/dockerd.log", "wb")
    daemon = subprocess.Popen(
        [
            "dockerd",
            f"--data-root={root}/data",
            f"--exec-root={root}/exec",
            f"--pidfile={root}/dockerd.pid",
            f"--host=unix://{sock}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            f"--default-address-pool=base={ADDRESS_POOL},size=24",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: run("docker", "version", env=env, check=False, timeout=10).returncode == 0,
            timeout=60,
            interval=0.2,
            what="dockerd to answer",
        )
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        log.close()
        for point in _mounts_under(root):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _mirror() -> str:
    """The Debian mirror apt uses on this machine."""
    for source in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if source.is_file():
            for uri in re.findall(r"(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", source.read_text() + "\n"):
                return uri
    return "http://deb.debian.org/debian"


def _apt_proxy() -> dict[str, str]:
    found = run("apt-config", "dump", "Acquire::http::Proxy", check=False).stdout
    match = re.search(r'Acquire::http::Proxy "([^"]+)"', found)
    return {"http_proxy": match.group(1)} if match else {}


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory):
    """The project's image, built on a debootstrapped base that trusts this machine's extra CAs."""
    base, tag = "p2pnet-test-base:bookworm", "p2pnet:test"
    tarball = os.environ.get("P2P_TEST_BASE_TAR")
    if not tarball:
        rootfs = tmp_path_factory.mktemp("rootfs") / "bookworm"
        timed(
            "debootstrap",
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            _mirror(),
            env={**os.environ, **_apt_proxy()},
            timeout=600,
        )
        extra = Path("/usr/local/share/ca-certificates")
        for cert in extra.glob("**/*.crt") if extra.is_dir() else []:
            shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
        run("chroot", str(rootfs), "update-ca-certificates")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tarball = str(tmp_path_factory.mktemp("base") / "bookworm.tar")
        run("tar", "-C", str(rootfs), "-cf", tarball, ".", timeout=300)
        shutil.rmtree(rootfs)
    timed(
        "import",
        "docker",
        "import",
        "--change",
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",  # pip trusts the system store (and its extra CAs)
        tarball,
        base,
        env=docker,
    )
    timed(
        "build",
        "docker",
        "build",
        "--network=host",  # the build's pip reaches the registry as this machine does
        "--build-arg",
        f"BASE={base}",
        "--tag",
        tag,
        str(ROOT),
        env=docker,
        timeout=600,
    )
    size = run("docker", "image", "inspect", "--format", "{{.Size}}", tag, env=docker).stdout.strip()
    base_size = run("docker", "image", "inspect", "--format", "{{.Size}}", base, env=docker).stdout.strip()
    FIGURES["image size"] = f"{int(size) / 1e6:.0f} MB (base {int(base_size) / 1e6:.0f} MB)"
    return tag


# --- the seed network in containers ----------------------------------------------------------------


class Seed:
    """The seed topology on free ports (never 9000-9006), rendered for compose and brought up."""

    def __init__(self, folder: Path, docker_env: dict, image: str) -> None:
        self.folder = folder
        self.env = docker_env
        ports = free_ports(10)
        peers = []
        for i in (1, 2, 3):
            rest, grpc, lane = ports[3 * i - 2 : 3 * i + 1]
            peers.append(
                {
                    "name": f"peer{i}",
                    "host": "127.0.0.1",
                    "rest_port": rest,
                    "grpc_port": grpc,
                    "lane_port": lane,
                    "shared_dir": f"data/peer{i}",
                    "friends": {"primary": f"peer{i % 3 + 1}", "backup": f"peer{(i + 1) % 3 + 1}"},
                }
            )
            (folder / "data" / f"peer{i}").mkdir(parents=True)
            (folder / "data" / f"peer{i}" / f"archivo{i}.txt").write_text(f"Hola desde peer{i}.\n")
        self.doc: dict = {"maestro": {"host": "127.0.0.1", "port": ports[0]}, "peers": peers, "settings": {}}
        self.doc["settings"] = {"heartbeat_interval": 1.0}  # the drill waits on beats: keep them quick
        self.topology = folder / "topology.yaml"
        self.topology.write_text(yaml.safe_dump(self.doc, sort_keys=False))
        self.out = folder / "compose"
        run(
            sys.executable,
            str(ROOT / "launcher.py"),
            "render",
            str(self.topology),
            "--target",
            "compose",
            "--out",
            str(self.out),
            "--image",
            image,
        )

    @property
    def maestro(self) -> str:
        return f"http://127.0.0.1:{self.doc['maestro']['port']}"

    def peer(self, name: str) -> str:
        [spec] = [p for p in self.doc["peers"] if p["name"] == name]
        return f"http://127.0.0.1:{spec['rest_port']}"

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return run("docker-compose", "-p", PROJECT, "-f", str(self.out / "compose.yaml"), *args, env=self.env,
                   timeout=timeout, check=check)  # fmt: skip

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("docker", *args, env=self.env, check=check, timeout=60)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def state(self, service: str) -> dict:
        return json.loads(self.docker("inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def alive(self) -> dict[str, dict]:
        answer = requests.get(f"{self.maestro}/peers", timeout=2).json()
        return {p["name"]: p for p in answer["peers"]}

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "P2P_TOPOLOGY": str(self.topology)}  # the Maestro's URL and the operator's token
        env.pop("DOCKER_HOST", None)
        return run(sys.executable, "-m", "peer_app.client", *args, env=env, check=check, cwd=self.folder, timeout=60)

    def wait_up(self, timeout: float = 60) -> None:
        def up() -> bool:
            nodes = ["maestro", "peer1", "peer2", "peer3"]
            healthy = all(self.state(n).get("Health", {}).get("Status") == "healthy" for n in nodes)
            return healthy and all(p["alive"] for p in self.alive().values()) and len(self.alive()) == 3

        wait_until(up, timeout=timeout, interval=0.25, what="every container healthy and every peer alive")


@pytest.fixture(scope="module")
def seed(docker, image, tmp_path_factory):
    net = Seed(tmp_path_factory.mktemp("seed"), docker, image)
    started = time.monotonic()
    net.compose("up", "-d")
    try:
        net.wait_up()
        FIGURES["up (4 nodes healthy, 3 peers alive)"] = f"{time.monotonic() - started:.1f} s"
        yield net
    finally:
        for service in ("maestro", "peer1", "peer2", "peer3"):  # shown when a test failed
            print(
                f"--- {service} ---\n{net.docker('logs', '--tail', '15', net.container(service), check=False).stdout}"
            )
        net.compose("down", "--volumes", "--remove-orphans", check=False)
        print("figures:", json.dumps(FIGURES, indent=1))


# --- what a user checks first: files, search, a download and an upload from the host ---------------------


def test_each_peer_lists_its_own_files(seed):
    for i in (1, 2, 3):
        files = requests.get(f"{seed.peer(f'peer{i}')}/files", timeout=5).json()
        assert [f["name"] for f in files["files"]] == [f"archivo{i}.txt"]


def test_a_search_finds_files_on_several_peers(seed):
    answer = requests.get(f"{seed.peer('peer1')}/search", params={"query": ".txt", "fanout": "2"}, timeout=10).json()
    assert {r["peer"] for r in answer["results"]} == {"peer1", "peer2", "peer3"}
    assert answer["complete"] is True
    # what the nodes advertise is what a client on this machine reaches
    assert {r["grpc_address"].rsplit(":", 1)[0] for r in answer["results"]} == {"127.0.0.1"}


def test_the_cli_on_the_host_downloads_over_the_lane_and_over_the_stream(seed, tmp_path):
    lane = json.loads(seed.client("download", "archivo2.txt", "--json", "--out", str(tmp_path / "lane.txt")).stdout)
    assert (tmp_path / "lane.txt").read_text() == "Hola desde peer2.\n"
    assert lane["lane_bytes"] == {"peer2": 18}  # the lane's published port, reached from the host: bytes by sendfile
    assert "peer_app.lane: Lane archivo2.txt: 18 B" in seed.docker("logs", seed.container("peer2")).stderr
    stream = seed.client("download", "archivo3.txt", "--no-lane", "--json", "--out", str(tmp_path / "stream.txt"))
    assert (tmp_path / "stream.txt").read_text() == "Hola desde peer3.\n"
    assert json.loads(stream.stdout)["lane_bytes"] == {}


def test_the_cli_on_the_host_uploads_and_the_maestro_lists_the_file(seed, tmp_path):
    (tmp_path / "nuevo.txt").write_text("subido desde el host\n")
    seed.client("upload", str(tmp_path / "nuevo.txt"), "--to", "peer1")
    found = requests.get(f"{seed.maestro}/locate", params={"file": "nuevo.txt"}, timeout=5).json()
    assert [p["name"] for p in found["peers"]] == ["peer1"]


# --- the image's habits ----------------------------------------------------------------------------------


def test_servers_run_unprivileged_and_the_secret_is_in_no_image_variable_or_command_line(seed, image):
    secret = (seed.folder / ".p2p-secret").read_text().strip()
    for service in ("maestro", "peer1"):
        top = seed.docker("top", seed.container(service), "-eo", "pid,uid,args").stdout
        rows = top.splitlines()[1:]
        assert rows and {row.split()[1] for row in rows} == {str(UID)}, top
        assert secret not in top and secret not in seed.docker("inspect", seed.container(service)).stdout
    assert secret not in seed.docker("image", "inspect", image).stdout
    found = seed.docker(
        "run", "--rm", "--network=none", "--user=0", "--entrypoint=find", image, "/", "-xdev", "-name", ".p2p-secret"
    )
    assert found.stdout.strip() == ""


def test_the_client_and_the_launcher_run_from_the_image_too(seed, image):
    inside = ["run", "--rm", f"--network=container:{seed.container('net')}", image]
    located = seed.docker(*inside, "p2p", "--maestro", seed.maestro, "--json", "locate", "archivo1.txt").stdout
    assert [p["name"] for p in json.loads(located)["peers"]] == ["peer1"]
    mount = f"--volume={seed.out / 'topology.yaml'}:/etc/p2pnet/topology.yaml:ro"
    checked = seed.docker(
        "run", "--rm", "--network=none", mount, image, "launcher", "validate", "/etc/p2pnet/topology.yaml"
    )
    assert "ok: maestro + 3 peer(s)" in checked.stdout


def test_a_peers_sides_run_as_two_unprivileged_containers_sharing_its_volume_as_in_a_pod(seed, image, tmp_path):
    """The Kubernetes shape: `rest` and `grpc` containers, uid 10001 from the start, one state volume."""
    seed.compose("stop", "peer3")
    secret = tmp_path / "secret"  # as a Secret volume with fsGroup shows it: readable by the pod's group
    shutil.copy(seed.folder / ".p2p-secret", secret)
    os.chown(secret, UID, UID)
    secret.chmod(0o440)
    common = [
        "run",
        "--detach",
        f"--network=container:{seed.container('net')}",
        f"--volume={PROJECT}_peer3-state:/var/lib/p2pnet",
        f"--volume={seed.out / 'topology.yaml'}:/etc/p2pnet/topology.yaml:ro",
        f"--volume={secret}:/run/secrets/p2pnet_secret:ro",
        "--env=P2P_NODE=peer3",
        "--read-only",
        "--tmpfs=/tmp",
    ]
    since = time.time()
    try:
        for role in ("rest", "grpc"):
            seed.docker(*common, f"--name=pod-{role}", image, role)

        def serving() -> bool:
            peer = seed.alive()["peer3"]
            files = requests.get(seed.peer("peer3") + "/files", timeout=2).json()["files"]
            return peer["alive"] and peer["last_seen"] > since and [f["name"] for f in files] == ["archivo3.txt"]

        wait_until(serving, timeout=20, interval=0.2, what="peer3 served by its two containers")
        for role in ("rest", "grpc"):
            assert seed.docker("top", f"pod-{role}", "-eo", "pid,uid").stdout.split()[3] == str(UID)
    finally:
        seed.docker("rm", "--force", "pod-rest", "pod-grpc", check=False)
        seed.compose("start", "peer3")
    seed.wait_up()  # peer3 back in compose, healthy


def test_sigterm_stops_every_process_of_a_peer_cleanly_within_the_grace_period(seed):
    seed.wait_up()
    started = time.monotonic()
    seed.docker("stop", "--time", "10", seed.container("peer3"))
    took = time.monotonic() - started
    state = seed.state("peer3")
    FIGURES["docker stop (SIGTERM) of a peer"] = f"{took:.1f} s, exit {state['ExitCode']}"
    assert state["ExitCode"] == 0  # stopped by its SIGTERM: one SIGKILLed after the 10 s grace exits 137
    seed.docker("start", seed.container("peer3"))
    wait_until(lambda: seed.alive()["peer3"]["alive"], timeout=30, what="peer3 alive again")


def test_kill_drill_a_peer_killed_by_sigkill_is_back_and_alive_within_ten_seconds(seed):
    """The node's process killed from outside (a crash, the OOM killer): the restart policy brings it back.

    `docker kill` itself is an operator's stop to Docker, which its restart policies leave stopped.
    """
    before = seed.state("peer1")
    killed_at = time.time()
    started = time.monotonic()
    os.kill(before["Pid"], signal.SIGKILL)

    def back() -> bool:
        state = seed.state("peer1")
        if state["Pid"] in (0, before["Pid"]):
            return False
        peer = seed.alive()["peer1"]
        return peer["alive"] and peer["last_seen"] > killed_at and requests.get(seed.peer("peer1") + "/health").ok

    wait_until(back, timeout=10, interval=0.1, what="peer1 restarted, healthy and alive at the Maestro")
    FIGURES["kill drill: peer back and alive"] = f"{time.monotonic() - started:.1f} s"


def test_with_the_maestros_container_stopped_p2p_locate_still_answers(seed):
    seed.compose("stop", "maestro")
    try:
        answer = requests.get(f"{seed.peer('peer1')}/locate", params={"file": "archivo3.txt"}, timeout=10)
        assert answer.status_code == 200 and [p["name"] for p in answer.json()["peers"]] == ["peer3"]
        assert seed.state("maestro")["ExitCode"] == 0
    finally:
        seed.compose("start", "maestro")


def test_down_leaves_no_container_network_or_anonymous_volume(seed):
    seed.compose("down")
    assert seed.docker("ps", "--all", "--quiet").stdout.strip() == ""
    networks = seed.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["host", "none"]
    volumes = seed.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(volumes) == [f"{PROJECT}_{n}-state" for n in ("maestro", "peer1", "peer2", "peer3")]
