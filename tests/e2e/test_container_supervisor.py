"""The small supervisor a peer's container runs as PID 1 (control/container.py supervise): real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT, wait_until

SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
STUBBORN = (
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
)
QUITTER = "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); sys.exit(3)"


def supervisor(tmp_path: Path, grace: float, **children: str) -> tuple[subprocess.Popen, dict[str, Path]]:
    """Run supervise() over python children in a process of its own; return it and each child's pid file."""
    pids = {name: tmp_path / f"{name}.pid" for name in children}
    programs = {name: [sys.executable, "-c", code, str(pids[name])] for name, code in children.items()}
    script = (
        "import os, sys; from control.container import supervise; "
        f"sys.exit(supervise({programs!r}, dict(os.environ), grace={grace}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    return proc, pids


def started(pids: dict[str, Path]) -> dict[str, int]:
    wait_until(lambda: all(p.exists() and p.read_text() for p in pids.values()), timeout=10, what="children up")
    return {name: int(path.read_text()) for name, path in pids.items()}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_stops_both_sides_and_the_container_exits_zero(tmp_path):
    proc, pids = supervisor(tmp_path, 8.0, rest=SLEEPER, grpc=SLEEPER)
    children = started(pids)
    begun = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0 and time.monotonic() - begun < 3
    assert all(gone(pid) for pid in children.values())


def test_a_side_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    proc, pids = supervisor(tmp_path, 1.0, rest=SLEEPER, grpc=STUBBORN)
    children = started(pids)
    begun = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert 0.9 < time.monotonic() - begun < 5
    assert all(gone(pid) for pid in children.values())


def test_a_side_that_dies_stops_the_other_and_the_container_exits_so_the_engine_restarts_it(tmp_path):
    proc, pids = supervisor(tmp_path, 8.0, rest=SLEEPER, grpc=QUITTER)
    children = started(pids)
    assert proc.wait(10) == 1
    assert gone(children["rest"])
