"""`launcher.py status` decided on made-up rows: which nodes are not well, why, and the exit code."""

from __future__ import annotations

from pathlib import Path

from supervisor.states import ProcessStates

from control.health import NodeHealth
from control.network import NodeStatus
from control.status import report
from control.supervisor import ProcInfo

TOPOLOGY = Path("/nets/topology.yaml")
SOCKET = Path("/nets/.run/topology/supervisor.sock")
WELL = NodeHealth("x", rest=True, grpc=True, registered=True, files=2)


def programs_of(node: str) -> list[str]:
    return ["maestro"] if node == "maestro" else [f"{node}-rest", f"{node}-grpc"]


def proc(node: str, name: str, state: str = "RUNNING", pid: int = 100) -> ProcInfo:
    return ProcInfo(node, name, state, pid, start=1000, now=4725, description="", code=getattr(ProcessStates, state))


def row(node: str, *, states=("RUNNING", "RUNNING"), health=WELL, remote: bool = False) -> NodeStatus:
    named = zip(programs_of(node), states, strict=False)  # fewer states: programs missing
    procs = () if remote else tuple(proc(node, n, s, 100 + i) for i, (n, s) in enumerate(named))
    return NodeStatus(node, procs, health, f"http://127.0.0.1/{node}", remote=remote)


def status_of(rows, *, running: bool = True, every: bool = False):
    return report(rows, programs_of, running=running, every=every, topology=TOPOLOGY, socket=SOCKET)


def test_a_network_all_well_exits_0_and_lists_pids_in_the_order_of_programs():
    status = status_of([row("maestro"), row("peer1")])
    assert (status.exit_code, status.problems, status.why("t.yaml")) == (0, [], "")
    lines = status.table().splitlines()
    assert lines[0].split() == ["NODE", "STATE", "PID", "UPTIME", "HEALTHY", "REGISTERED", "FILES", "URL", "PROGRAMS"]
    assert lines[2].split()[:7] == ["peer1", "RUNNING", "100,101", "1:02:05", "yes", "yes", "2"]
    assert status.as_json()["nodes"][1]["programs"] == [
        {"name": "peer1-rest", "state": "RUNNING", "pid": 100},
        {"name": "peer1-grpc", "state": "RUNNING", "pid": 101},
    ]


def test_a_stopped_node_exits_1_naming_its_programs():
    status = status_of([row("maestro"), row("peer2", states=("STOPPED", "STOPPED"))])
    assert status.exit_code == 1
    assert status.why("t.yaml").startswith("not all is well: peer2: peer2-rest STOPPED, peer2-grpc STOPPED; see ")
    assert [n["ok"] for n in status.as_json()["nodes"]] == [True, False]


def test_health_problems_are_named_in_the_order_a_user_fixes_them():
    rows = [
        row("peer1", health=NodeHealth("peer1", rest=False)),
        row("peer2", health=NodeHealth("peer2", rest=True, grpc=False)),
        row("peer3", health=NodeHealth("peer3", rest=True, grpc=True, registered=False)),
    ]
    assert status_of(rows).problems == [
        "peer1: RUNNING but GET /health does not answer at http://127.0.0.1/peer1",
        "peer2: RUNNING but its gRPC health check does not answer",
        "peer3: healthy but not registered (alive) at the Maestro",
    ]


def test_a_network_not_running_here_exits_3_and_says_how_to_start_it():
    status = status_of([row("maestro", states=()), row("peer1", states=())], running=False)
    assert (status.exit_code, status.problems) == (3, [])
    assert status.why("t.yaml") == (
        f"the network of {TOPOLOGY} is not running (no supervisord answers on {SOCKET}); "
        "start it with: python launcher.py up t.yaml"
    )
    assert [line.split()[1] for line in status.table().splitlines()[1:]] == ["DOWN", "DOWN"]


def test_a_remote_node_that_does_not_answer_counts_only_with_all():
    rows = [row("maestro"), row("peer9", health=NodeHealth("peer9", rest=False), remote=True)]
    assert status_of(rows).exit_code == 0
    everything = status_of(rows, every=True)
    assert everything.exit_code == 1
    assert everything.problems == ["peer9: REMOTE, GET /health does not answer at http://127.0.0.1/peer9"]
    assert everything.table().splitlines()[2].split()[1] == "REMOTE"


def test_a_node_in_a_crash_loop_is_picked_out_for_its_log_tail():
    status = status_of([row("maestro"), row("peer3", states=("RUNNING", "BACKOFF"))])
    assert [r.node for r in status.crashing] == ["peer3"]
    assert status.problems == ["peer3: peer3-grpc BACKOFF"]
