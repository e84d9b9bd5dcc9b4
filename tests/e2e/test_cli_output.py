"""What a user of the client sees, against real networks: progress that resumes where the last run
stopped, Ctrl-C that says what it kept, each exit code of docs/api.md, PEER as a name or a URL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from common.config import Settings
from tests.support import ROOT, MiB, Terminal, free_port, sha, wait_until


def p2p(maestro: str, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The client as a user runs it (`python -m peer_app.client`; the installed `p2p` is the same main)."""
    return subprocess.run(
        [sys.executable, "-m", "peer_app.client", "--maestro", maestro, *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def located(maestro: str, name: str) -> list[str]:
    resp = requests.get(maestro + "/locate", params={"file": name}, timeout=5)
    return sorted(p["name"] for p in resp.json()["peers"]) if resp.status_code == 200 else []


def test_ctrl_c_keeps_the_pieces_says_so_and_the_next_run_starts_its_bar_there(network, tmp_path):
    data = os.urandom(12 * MiB)
    slow = Settings(heartbeat_interval=0.5, request_timeout=1.0, max_transfer_rate=4 * MiB)
    nodes = network(["peer1"], files={"peer1": {"big.bin": data}}, settings=slow)
    maestro = nodes["maestro"].url
    wait_until(lambda: located(maestro, "big.bin") == ["peer1"], what="registration")
    out = tmp_path / "dl" / "big.bin"
    out.parent.mkdir()
    args = ("download", "big.bin", "--out", str(out), "--piece-size", "1MiB")

    def journal_pieces() -> int:
        journals = list(out.parent.glob(".big.bin.p2p-part-*.journal"))
        return len(journals[0].read_text().splitlines()) - 1 if journals else 0

    first = Terminal(maestro, *args)
    wait_until(lambda: journal_pieces() >= 3, what="three pieces on disk")
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130, first.text()
    said = first.text()
    assert re.search(r"error: interrupted: [\d.]+ MiB of 12\.0 MiB kept in .*\.big\.bin\.p2p-part-", said), said
    assert "run the same download again to resume" in said and "Traceback" not in said
    assert not out.exists()

    second = Terminal(maestro, *args)
    assert second.wait() == 0, second.text()
    screen = second.text()
    frames = re.findall(r"big\.bin:\s+(\d+)%\|", screen)
    assert frames and int(frames[0]) >= 20, screen  # the bar starts at what the first run kept
    assert re.search(r"\| [\d.]+M/12\.6M \[[\d:]+<[\d:?]+, +[\d.?]+[kMG]?B/s\]", screen), screen  # size, ETA, rate
    summary = re.search(
        r"downloaded big\.bin: ([\d.]+) MiB in [\d.]+ s \(([\d.]+) MB/s\) from peer1; resumed at", screen
    )
    assert summary, screen
    assert float(summary.group(1)) < 12  # the rate counts what this run fetched
    assert sha(out.read_bytes()) == sha(data)


def test_each_exit_code_and_what_the_user_reads(network, tmp_path):
    limited = Settings(heartbeat_interval=0.5, request_timeout=1.0, max_concurrent_transfers=1,
                       max_transfer_rate=2 * MiB)  # fmt: skip
    nodes = network(
        ["peer1", "peer2"],
        files={"peer1": {"archivo1.txt": b"hola desde peer1\n"}, "peer2": {"archivo2.txt": b"hola desde peer2\n"}},
        settings=limited,
    )
    maestro, peer1, peer2 = nodes["maestro"].url, nodes["peer1"], nodes["peer2"]
    wait_until(lambda: located(maestro, "archivo1.txt") == ["peer1"], what="registration")
    wait_until(lambda: located(maestro, "archivo2.txt") == ["peer2"], what="registration")

    def run(*args: str, code: int) -> str:
        result = p2p(maestro, *args, cwd=tmp_path)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        if code:
            assert result.stdout == "" and len(result.stderr.splitlines()) == 1, (args, result.stderr)
            assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
        return result.stdout if code == 0 else result.stderr

    # 0: done; PEER as a name, as host:port and as a URL; options after the command.
    assert run("download", "archivo1.txt", code=0).startswith("downloaded archivo1.txt: 17 B in ")
    assert (tmp_path / "archivo1.txt").read_bytes() == b"hola desde peer1\n"
    assert json.loads(run("locate", "archivo2.txt", "--json", code=0))["peers"][0]["name"] == "peer2"
    found = run("search", "archivo", "--peer", "peer1", code=0)
    assert found.startswith("2 result(s) for 'archivo'; the query reached 2 peer(s)"), found
    assert "found through peer1 -> peer2" in run("locate", "archivo2.txt", "--via-peer", "peer1", code=0)
    host_port = peer2.url.removeprefix("http://")
    assert "found through peer2" in run("locate", "archivo2.txt", "--via-peer", host_port, code=0)
    assert "dummy-upload: 1.00 MiB in " in run("dummy-upload", "--to", peer1.url, "--size", "1MiB", code=0)

    # 1: any other failure (here: the target exists), with the flag that fixes it.
    said = run("download", "archivo1.txt", code=1)
    assert "already exists; pass --overwrite to replace it" in said
    # 2: usage, pointing at the help.
    said = run("locate", "x", "--colour", code=2)
    assert "No such option '--colour'" in said and "-h`" in said
    assert "'12 parsecs' is not a size" in run("dummy-upload", "--to", "peer1", "--size", "12 parsecs", code=2)
    # 3: not found: a file, and a peer name nobody registered (with the names that exist).
    assert run("locate", "nothing.txt", code=3) == "error: no live peer has 'nothing.txt'\n"
    said = run("search", "x", "--peer", "ghost", code=3)
    assert "no peer named 'ghost' (registered: peer1, peer2)" in said
    # 4: unreachable: a Maestro that is not there, with what to run.
    nowhere = f"http://127.0.0.1:{free_port()}"
    said = run("--maestro", nowhere, "locate", "x", code=4)
    assert f"the Maestro at {nowhere} does not answer (connection refused)" in said
    assert "`python launcher.py up` starts it" in said
    # 5: integrity: two holders registered content peer1 does not have; the majority wins, the bytes don't match.
    for liar in ("liar1", "liar2"):
        lie = {"name": liar, "rest_url": peer1.url, "grpc_address": peer1.config.grpc_address,
               "heartbeat_interval": 60,
               "files": [{"name": "archivo1.txt", "size": 17, "mtime": 1, "sha256": "0" * 64}]}  # fmt: skip
        assert requests.post(maestro + "/register", json=lie, timeout=5).status_code == 200
    said = run("download", "archivo1.txt", "--out", str(tmp_path / "checked.txt"), code=5)
    assert "holds other content" in said and not (tmp_path / "checked.txt").exists()
    # 6: busy: peer2 serves one transfer at a time, and one holds it.
    holder = subprocess.Popen(
        [sys.executable, "-m", "peer_app.client", "--maestro", maestro, "dummy-download", "x", "--from", "peer2",
         "--size", "100MiB"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        second = ("--retry-for", "0.5", "dummy-download", "x", "--from", "peer2", "--size", "1MiB")
        wait_until(lambda: p2p(maestro, *second).returncode == 6, what="peer2's one slot taken")
        said = run(*second, code=6)
        assert "peer2 is at its limit of 1 concurrent transfers" in said, said
    finally:
        holder.kill()
        holder.wait(10)
    # 7: unauthorized is produced by the real guard, from a stranger's address (a network namespace):
    # tests/e2e/test_attacks.py::test_the_stranger_sees_one_line_and_exit_7_from_the_cli.
