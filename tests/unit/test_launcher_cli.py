"""The click CLI: validate, render and errors, through CliRunner (no processes started)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import yaml
from click.testing import CliRunner

import launcher
from control import topology as topo
from tests.launcher_support import ROOT, ring_topology, seed_dict


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(launcher.cli, list(args), catch_exceptions=False)

    return invoke


def write(tmp_path, data) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_validate_accepts_the_seed_topology(run):
    result = run("validate", str(ROOT / "topology.yaml"))
    assert result.exit_code == 0
    assert "ok: maestro + 3 peer(s)" in result.stdout


def test_validate_prints_one_line_per_problem_on_stderr_and_exits_2(run, tmp_path):
    data = seed_dict()
    data["peers"][1]["rest_port"] = 9001
    data["peers"][2]["friends"]["primary"] = "peer3"
    path = write(tmp_path, data)
    result = run("validate", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: peers[2].friends.primary: a peer cannot be its own friend",
        f"{path}: peers[1].rest_port: 9001 is already used by peers[0].rest_port",
    ]
    assert "Traceback" not in result.output


def test_a_peer_name_the_maestro_would_refuse_is_refused_by_validate(run, tmp_path):
    data = seed_dict()
    data["peers"][0]["name"] = "p" * 70
    for peer in data["peers"][1:]:
        peer["friends"] = {role: ("p" * 70 if f == "peer1" else f) for role, f in peer["friends"].items()}
    path = write(tmp_path, data)
    result = run("validate", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}: peers[0].name: 'pppppppppppppppppppp'... is 70 characters long (at most 64)"
    ]


def test_missing_topology_file_is_one_line(run, tmp_path):
    result = run("validate", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{tmp_path / 'absent.yaml'}: file not found"


def test_render_writes_configs_and_supervisord_conf_without_starting(run, tmp_path):
    path = write(tmp_path, seed_dict())
    result = run("render", path)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / ".run" / "topology"
    assert sorted(result.stdout.split()) == sorted(
        [str(run_dir / "supervisord.conf")]
        + [str(run_dir / "config" / f"{n}.json") for n in ("maestro", "peer1", "peer2", "peer3")]
    )
    assert (tmp_path / "supervisord.conf").is_symlink()
    assert not (run_dir / "supervisord.pid").exists()
    assert not (run_dir / "supervisor.sock").exists()


@pytest.mark.parametrize("command", ["start", "stop", "restart", "kill", "logs"])
def test_unknown_node_is_refused_naming_the_known_ones(run, tmp_path, command):
    path = write(tmp_path, seed_dict())
    result = run(command, "peer9", "-t", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == "unknown node 'peer9': the topology has maestro, peer1, peer2, peer3"


@pytest.mark.parametrize("command", ["start", "stop", "restart", "kill"])
def test_node_commands_on_a_network_that_is_not_up_say_so(run, tmp_path, command):
    path = write(tmp_path, seed_dict())
    result = run(command, "peer1", "-t", path)
    assert result.exit_code == 3
    assert "is not running: run `launcher.py up" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_down_of_a_network_that_is_not_up_is_a_no_op(run, tmp_path):
    path = ring_topology(tmp_path, peers=3)
    result = run("down", str(path))
    assert result.exit_code == 0
    assert "was not running" in result.stdout


def test_status_of_a_network_that_is_not_up_lists_every_node_down_exits_3_and_says_why(run, tmp_path):
    path = ring_topology(tmp_path, peers=3)
    result = run("status", str(path))
    assert result.exit_code == 3
    assert result.stderr.startswith(f"the network of {path} is not running (no supervisord answers on ")
    assert result.stderr.strip().endswith(f"start it with: python launcher.py up {path}")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NODE", "STATE", "PID", "UPTIME"]
    assert [ln.split()[:2] for ln in lines[1:]] == [[n, "DOWN"] for n in ("maestro", "peer1", "peer2", "peer3")]


def test_up_refuses_a_port_in_use_before_starting_anything(run, tmp_path):
    path = ring_topology(tmp_path, peers=3)
    data = yaml.safe_load(path.read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", data["peers"][1]["grpc_port"]))
        s.listen()
        result = run("up", str(path))
    assert result.exit_code == 2
    port = data["peers"][1]["grpc_port"]
    assert result.stderr.strip() == f"{path}: peers[1].grpc_port: 127.0.0.1:{port} is already in use"
    assert not (tmp_path / ".run" / "topology" / "supervisord.pid").exists()


def test_logs_of_a_node_without_logs_prints_nothing(run, tmp_path):
    path = write(tmp_path, seed_dict())
    result = run("logs", "peer1", "-t", path)
    assert result.exit_code == 0 and result.stdout == ""


def test_logs_prefix_each_line_with_its_program(run, tmp_path):
    path = write(tmp_path, seed_dict())
    logs = tmp_path / ".run" / "topology" / "logs"
    logs.mkdir(parents=True)
    (logs / "peer1-rest.log").write_text("a\nb\n")
    (logs / "peer1-grpc.log").write_text("c\n")
    result = run("logs", "peer1", "-n", "1", "-t", path)
    assert result.stdout.splitlines() == ["peer1-rest| b", "peer1-grpc| c"]


def test_help_lists_every_command(run):
    result = run("--help")
    for command in ("up", "down", "status", "start", "stop", "restart", "kill", "logs", "validate", "render"):
        assert f"  {command} " in result.stdout, command


def test_generate_writes_a_valid_ring_topology_on_consecutive_ports(run, tmp_path):
    out = tmp_path / "big.yaml"
    result = run("generate", "--peers", "20", "--base-port", "20000", "--out", str(out), "--sample-files")
    assert result.exit_code == 0, result.output
    t = topo.load(out)
    assert len(t.peers) == 20
    assert t.maestro.port == 20000 and max(p.grpc_port for p in t.peers) == 20040
    assert [(p.primary, p.backup) for p in t.peers][:2] == [("peer2", "peer3"), ("peer3", "peer4")]
    assert (t.peers[-1].primary, t.peers[-1].backup) == ("peer1", "peer2")
    assert (tmp_path / "data" / "peer20" / "archivo20.txt").is_file()


def test_generate_random_friends_are_valid_and_reproducible(run, tmp_path):
    a = run("generate", "--peers", "8", "--random", "--seed", "7", "--base-port", "21000").stdout
    b = run("generate", "--peers", "8", "--random", "--seed", "7", "--base-port", "21000").stdout
    assert a == b
    t = topo.parse(yaml.safe_load(a), tmp_path / "t.yaml")
    assert all(p.name not in (p.primary, p.backup) and p.primary != p.backup for p in t.peers)


def test_generate_on_free_ports_validates(run, tmp_path):
    result = run("generate", "--peers", "3")
    t = topo.parse(yaml.safe_load(result.stdout), tmp_path / "t.yaml")
    assert len({port for _, _, port in t.ports()}) == 7


@pytest.mark.parametrize(
    "args, message",
    [
        (["--peers", "2"], "2 is too few"),
        (["--peers", "3", "--base-port", "65530"], "peers[2].grpc_port: 65536 is out of range"),
    ],
    ids=["too-few-peers", "ports-past-65535"],
)
def test_generate_refuses_what_cannot_be_valid(run, args, message):
    result = run("generate", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_follow_yields_new_lines_as_they_are_written(tmp_path):
    from control.network import Network

    path = write(tmp_path, seed_dict())
    net = Network(topo.load(path))
    log = net.rendered.layout.log_path("maestro")
    log.parent.mkdir(parents=True)
    log.write_text("old\n")
    lines = net.follow_logs("maestro", follow=True, stop=lambda: len(seen) >= 3)
    seen = [next(lines)]
    with open(log, "a") as fh:
        fh.write("new 1\nnew 2\npartial")
    seen += [next(lines), next(lines)]
    assert seen == ["maestro| old", "maestro| new 1", "maestro| new 2"]
    assert list(lines) == []  # stops; the unfinished line is not printed


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_and_seed_ranges():
    from control.generate import _ephemeral_floor, free_ports

    ports = free_ports(50)
    assert len(set(ports)) == 50
    assert all(10000 <= p < _ephemeral_floor() and p not in range(9000, 9007) for p in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_ports_never_hands_out_a_port_twice_across_calls():
    from control.generate import free_ports

    singles = [free_ports(1)[0] for _ in range(500)]  # one call per server, as the tests do
    assert len(set(singles)) == 500


def test_status_json_of_a_network_that_is_not_up(run, tmp_path):
    path = ring_topology(tmp_path, peers=3)
    result = run("status", "--json", "-t", str(path))
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert (doc["running"], doc["ok"], doc["problems"]) == (False, False, [])
    assert [n["node"] for n in doc["nodes"]] == ["maestro", "peer1", "peer2", "peer3"]
    assert doc["nodes"][1]["programs"] == [
        {"name": "peer1-rest", "state": "DOWN", "pid": None},
        {"name": "peer1-grpc", "state": "DOWN", "pid": None},
    ]


@pytest.mark.parametrize("command", ["validate", "render", "status", "down"])
def test_every_command_that_takes_a_topology_takes_it_with_t_too(run, tmp_path, command):
    path = str(ring_topology(tmp_path, peers=3))
    positional, option = run(command, path), run(command, "-t", path)
    assert positional.exit_code == option.exit_code and positional.exit_code in (0, 3), positional.output
    assert positional.stdout.replace(path, "T") == option.stdout.replace(path, "T")
    both = run(command, path, "-t", str(ROOT / "topology.yaml"))
    assert both.exit_code == 2 and "two topologies given" in both.stderr


def test_up_takes_t_as_well(run, tmp_path):
    path = write(tmp_path, seed_dict() | {"peers": seed_dict()["peers"][:1]})  # invalid: friends unknown
    assert run("up", "-t", path).exit_code == 2


@pytest.fixture
def utc(monkeypatch):
    """Lines without an offset are local time, as their writers wrote them: make local time UTC here."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_logs_of_every_node_merge_by_time_with_supervisord_events(run, tmp_path, utc):
    path = write(tmp_path, seed_dict())
    run_dir = tmp_path / ".run" / "topology"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    (logs / "maestro.log").write_text(
        "[2026-11-22 10:00:01 +0000] [7] [INFO] Listening at: http://127.0.0.1:9000 (7)\n"
        '[22/Nov/2026:10:00:04 +0000] 127.0.0.1 "GET /peers HTTP/1.1" 200 90 1ms\n'
    )
    (logs / "peer1-grpc.log").write_text(
        "2026-11-22 10:00:02,500 INFO p2pnet.transfers: Download archivo1.txt: 17 B in 0.00 s to ipv4:x\n"
        "Traceback (most recent call last):\n"
        "2026-11-22 10:00:05,000 INFO peer_app.agent: registered at http://127.0.0.1:9000 with 1 file(s)\n"
    )
    (run_dir / "supervisord.log").write_text(
        "2026-11-22 10:00:00,100 INFO RPC interface 'supervisor' initialized\n"
        "2026-11-22 10:00:00,200 INFO spawned: 'peer1-grpc' with pid 42\n"
        "2026-11-22 10:00:03,000 INFO exited: peer2-grpc (terminated by SIGKILL; not expected)\n"
    )
    everything = run("logs", "-t", path)
    assert everything.exit_code == 0
    assert everything.stdout.splitlines() == [
        "supervisord| 2026-11-22 10:00:00,200 INFO spawned: 'peer1-grpc' with pid 42",
        "maestro| [2026-11-22 10:00:01 +0000] [7] [INFO] Listening at: http://127.0.0.1:9000 (7)",
        "peer1-grpc| 2026-11-22 10:00:02,500 INFO p2pnet.transfers: Download archivo1.txt: 17 B in 0.00 s to ipv4:x",
        "peer1-grpc| Traceback (most recent call last):",
        "supervisord| 2026-11-22 10:00:03,000 INFO exited: peer2-grpc (terminated by SIGKILL; not expected)",
        'maestro| [22/Nov/2026:10:00:04 +0000] 127.0.0.1 "GET /peers HTTP/1.1" 200 90 1ms',
        "peer1-grpc| 2026-11-22 10:00:05,000 INFO peer_app.agent: registered at http://127.0.0.1:9000 with 1 file(s)",
    ]
    one = run("logs", "peer2", "-t", path)  # a node's own programs, and supervisord's lines about them only
    assert one.stdout.splitlines() == [
        "supervisord| 2026-11-22 10:00:03,000 INFO exited: peer2-grpc (terminated by SIGKILL; not expected)"
    ]
