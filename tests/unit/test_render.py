"""Rendering is pure: topology -> node configs + supervisord.conf, checked without processes."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from common.config import CONFIG_ENV, NodeConfig
from control import render, topology
from control.processes import GRACEFUL_TIMEOUT
from tests.launcher_support import mutate, seed_dict

PY = sys.executable
FAKE_ROOT = Path("/proj")


def seed(folder: str = "/net", settings: dict | None = None) -> topology.Topology:
    data = seed_dict()
    if settings:
        data["settings"] = settings
    return topology.parse(data, Path(folder) / "topology.yaml")


def conf_of(t: topology.Topology) -> configparser.RawConfigParser:
    r = render.render(t, FAKE_ROOT)
    parser = configparser.RawConfigParser()
    parser.read_string(r.texts[r.layout.conf])
    return parser


def test_render_touches_no_disk(tmp_path):
    t = seed(str(tmp_path))
    render.render(t, FAKE_ROOT)
    assert list(tmp_path.iterdir()) == []


def test_run_folder_is_beside_the_topology_and_holds_socket_pidfile_logs():
    r = render.render(seed("/net"), FAKE_ROOT)
    run = Path("/net/.run/topology")
    assert r.layout.run_dir == run
    assert r.layout.socket == run / "supervisor.sock"
    p = conf_of(seed("/net"))
    assert p["unix_http_server"]["file"] == str(run / "supervisor.sock")
    assert p["supervisord"]["pidfile"] == str(run / "supervisord.pid")
    assert p["supervisord"]["logfile"] == str(run / "supervisord.log")
    assert p["supervisord"]["childlogdir"] == str(run / "logs")
    assert p["supervisord"]["nodaemon"] == "false"
    assert p["supervisorctl"]["serverurl"] == f"unix://{run / 'supervisor.sock'}"
    assert (
        p["rpcinterface:supervisor"]["supervisor.rpcinterface_factory"]
        == "supervisor.rpcinterface:make_main_rpcinterface"
    )
    assert r.link == Path("/net/supervisord.conf")


def test_long_folder_falls_back_to_a_short_socket_in_the_users_private_folder_derived_from_the_run_folder():
    deep = "/" + "/".join(["a-rather-long-folder-name"] * 6)
    r1 = render.render(seed(deep), FAKE_ROOT)
    r2 = render.render(seed(deep + "x"), FAKE_ROOT)
    for r in (r1, r2):
        assert len(str(r.layout.socket).encode()) <= render.MAX_SOCKET_PATH
        assert r.layout.socket.parent == Path(f"/tmp/p2pnet-{os.geteuid()}")  # private: see control/private.py
    assert r1.layout.socket != r2.layout.socket
    assert r1.layout.socket == render.render(seed(deep), FAKE_ROOT).layout.socket  # stable
    assert r1.layout.pidfile.parent == r1.layout.run_dir  # only the socket moves


def test_two_topologies_in_one_folder_get_separate_run_folders():
    a = topology.parse(seed_dict(), Path("/net/a.yaml"))
    b = topology.parse(seed_dict(), Path("/net/b.yaml"))
    la, lb = render.layout_for(a), render.layout_for(b)
    assert la.run_dir != lb.run_dir and la.socket != lb.socket


def test_one_program_per_process_and_one_group_per_node():
    p = conf_of(seed())
    programs = sorted(s.removeprefix("program:") for s in p.sections() if s.startswith("program:"))
    assert programs == sorted(
        ["maestro", "peer1-rest", "peer1-grpc", "peer2-rest", "peer2-grpc", "peer3-rest", "peer3-grpc"]
    )
    groups = {s.removeprefix("group:"): p[s]["programs"].split(",") for s in p.sections() if s.startswith("group:")}
    assert groups == {
        "maestro": ["maestro"],
        "peer1": ["peer1-rest", "peer1-grpc"],
        "peer2": ["peer2-rest", "peer2-grpc"],
        "peer3": ["peer3-rest", "peer3-grpc"],
    }


def test_every_program_stops_as_a_group_and_is_restarted_then_fatal_on_a_crash_loop():
    p = conf_of(seed())
    for section in [s for s in p.sections() if s.startswith("program:")]:
        prog = p[section]
        assert prog["stopasgroup"] == "true" and prog["killasgroup"] == "true", section
        assert int(prog["stopwaitsecs"]) > GRACEFUL_TIMEOUT
        assert prog["autorestart"] == "true"
        assert int(prog["startsecs"]) >= 1 and 1 <= int(prog["startretries"]) <= 5
        assert prog["directory"] == str(FAKE_ROOT)
        assert prog["redirect_stderr"] == "true"
        assert prog["stdout_logfile"].startswith("/net/.run/topology/logs/")


def test_gunicorn_runs_in_the_foreground_with_a_graceful_timeout_below_stopwaitsecs():
    p = conf_of(seed(settings={"rest_workers": 3, "rest_threads": 5}))
    argv = shlex.split(p["program:peer2-rest"]["command"])
    assert argv[:3] == [PY, "-m", "gunicorn"]
    assert "--daemon" not in argv and "-D" not in argv
    assert argv[-1] == "peer_app:create_app()"

    def opt(name: str) -> str:
        return argv[argv.index(name) + 1]

    # gevent by default: a slow client or a hop waiting on its friends holds a greenlet, not a thread
    assert (opt("--worker-class"), opt("--workers"), opt("--worker-connections"), opt("--bind")) == (
        "gevent",
        "3",
        "1000",
        "127.0.0.1:9003",
    )
    assert "--threads" not in argv
    assert int(opt("--graceful-timeout")) < int(p["program:peer2-rest"]["stopwaitsecs"])
    assert shlex.split(p["program:maestro"]["command"])[-1] == "maestro_app:create_app()"
    assert "--bind 127.0.0.1:9000" in p["program:maestro"]["command"]


def test_grpc_program_gets_its_config_by_flag_and_env():
    p = conf_of(seed())
    argv = shlex.split(p["program:peer3-grpc"]["command"])
    assert argv == [PY, "-m", "peer_app.grpc_server", "--config", "/net/.run/topology/config/peer3.json"]
    env = p["program:peer3-grpc"]["environment"]
    assert env == 'P2P_CONFIG="/net/.run/topology/config/peer3.json",PYTHONUNBUFFERED="1"'


def test_percent_signs_are_escaped_for_supervisord():
    t = seed("/net/100%")
    p = conf_of(t)
    assert p["unix_http_server"]["file"] == "/net/100%%/.run/topology/supervisor.sock"


def test_node_configs_carry_identity_friends_maestro_and_settings():
    t = seed("/net", settings={"heartbeat_interval": 0.5})
    r = render.render(t, FAKE_ROOT)
    configs = {c.name: c for c in r.configs.values()}
    assert set(configs) == {"maestro", "peer1", "peer2", "peer3"}
    m = configs["maestro"]
    assert (m.role, m.host, m.rest_port, m.maestro_url) == ("maestro", "127.0.0.1", 9000, "http://127.0.0.1:9000")
    p1 = configs["peer1"]
    assert (p1.role, p1.rest_port, p1.grpc_port) == ("peer", 9001, 9002)
    assert p1.shared_dir == "/net/data/peer1" and p1.run_dir == "/net/.run/topology"
    assert p1.maestro_url == "http://127.0.0.1:9000"
    assert p1.friends["primary"].name == "peer2" and p1.friends["primary"].rest_url == "http://127.0.0.1:9003"
    assert p1.friends["backup"].name == "peer3" and p1.friends["backup"].rest_url == "http://127.0.0.1:9005"
    assert all(c.settings.heartbeat_interval == 0.5 for c in configs.values())
    # the JSON round-trips through the services' own loader
    for c in configs.values():
        assert NodeConfig.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_each_node_config_path_is_the_one_its_programs_are_given():
    t = seed()
    r = render.render(t, FAKE_ROOT)
    for spec in r.processes:
        env = dict(spec.environment)
        assert Path(env[CONFIG_ENV]) in r.configs
        assert r.configs[Path(env[CONFIG_ENV])].name == spec.node


def test_ipv6_hosts_are_bracketed_in_friend_urls():
    data = mutate(seed_dict(), lambda d: [p.update(host="::1") for p in d["peers"]])
    t = topology.parse(data, Path("/net/topology.yaml"))
    r = render.render(t, FAKE_ROOT)
    assert {c.name: c for c in r.configs.values()}["peer2"].friends["backup"].rest_url == "http://[::1]:9001"


def test_write_creates_files_reports_changes_and_links_supervisord_conf(tmp_path):
    t = topology.parse(seed_dict(), tmp_path / "topology.yaml")
    r = render.render(t, FAKE_ROOT)
    changed, warning = render.write(r)
    assert warning is None
    assert changed == set(r.configs) | set(r.texts)
    assert (tmp_path / "supervisord.conf").resolve() == r.layout.conf.resolve()
    assert (tmp_path / "data" / "peer2").is_dir()
    again, _ = render.write(render.render(t, FAKE_ROOT))
    assert again == set()
    t2 = topology.parse(
        mutate(seed_dict(), lambda d: d.update(settings={"heartbeat_interval": 1})), tmp_path / "topology.yaml"
    )
    changed, _ = render.write(render.render(t2, FAKE_ROOT))
    assert changed == set(r.configs)  # settings reach every node's JSON, not supervisord.conf


def test_write_leaves_a_foreign_supervisord_conf_alone(tmp_path):
    (tmp_path / "supervisord.conf").write_text("[supervisord]\n", encoding="utf-8")
    t = topology.parse(seed_dict(), tmp_path / "topology.yaml")
    _, warning = render.write(render.render(t, FAKE_ROOT))
    assert warning and "left alone" in warning
    assert (tmp_path / "supervisord.conf").read_text(encoding="utf-8") == "[supervisord]\n"


@pytest.mark.parametrize("name", ["topology.yaml", "net-2.yaml"])
def test_rendered_conf_is_accepted_by_supervisord_own_parser(tmp_path, name):
    from supervisor.options import ServerOptions

    t = topology.parse(seed_dict(), tmp_path / name)
    r = render.render(t, tmp_path)
    render.write(r)
    opts = ServerOptions()
    opts.realize(args=["-c", str(r.layout.conf)])
    groups = {g.name: [p.name for p in g.process_configs] for g in opts.process_group_configs}
    assert groups["peer1"] == ["peer1-rest", "peer1-grpc"]
    prog = opts.process_group_configs[0].process_configs[0]
    assert prog.stopasgroup and prog.killasgroup


def test_the_gthread_worker_stays_available_with_its_threads():
    p = conf_of(seed(settings={"rest_worker_class": "gthread", "rest_threads": 5}))
    argv = shlex.split(p["program:peer2-rest"]["command"])
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    assert argv[argv.index("--threads") + 1] == "5"


def test_an_event_listener_brings_fatal_programs_back(tmp_path):
    from supervisor.options import ServerOptions

    t = topology.parse(seed_dict(), tmp_path / "topology.yaml")
    r = render.render(t, tmp_path)
    render.write(r)
    opts = ServerOptions()
    opts.realize(args=["-c", str(r.layout.conf)])
    listeners = [g for g in opts.process_group_configs if g.name == "p2p-restarter"]
    assert len(listeners) == 1
    (listener,) = listeners[0].process_configs
    assert listener.command.endswith("-m control.restarter")
    assert {e.__name__ for e in listeners[0].pool_events} == {"ProcessStateFatalEvent", "ProcessStateRunningEvent"}
