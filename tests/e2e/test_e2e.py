"""A Maestro and peers as real gunicorn and gRPC processes on free ports."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import pytest
import requests

from tests.support import ROOT, Node, Terminal, wait_until

pytestmark = pytest.mark.e2e


def client(maestro: Node, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peer_app.client", "--maestro", maestro.url, *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def located(maestro: Node, name: str) -> list[str]:
    resp = requests.get(maestro.url + "/locate", params={"file": name}, timeout=5)
    return [p["name"] for p in resp.json()["peers"]] if resp.status_code == 200 else []


def test_register_locate_download_upload_and_back(network, tmp_path):
    original = os.urandom(3 * 1024 * 1024 + 17)
    nodes = network(["peer1", "peer2"], files={"peer1": {"archivo1.txt": original}})
    maestro = nodes["maestro"]
    wait_until(lambda: located(maestro, "archivo1.txt") == ["peer1"], what="peer1 registered")

    out = tmp_path / "downloads"
    out.mkdir()
    got = client(maestro, "download", "archivo1.txt", "--out", str(out / "archivo1.txt"))
    assert got.returncode == 0, got.stderr
    assert (out / "archivo1.txt").read_bytes() == original

    sent = client(maestro, "upload", str(out / "archivo1.txt"), "--to", nodes["peer2"].url, "--name", "copia.txt")
    assert sent.returncode == 0, sent.stderr
    assert located(maestro, "copia.txt") == ["peer2"]  # registered at once, no heartbeat needed

    back = client(maestro, "download", "copia.txt", "--out", str(out / "back.txt"))
    assert back.returncode == 0, back.stderr
    assert hashlib.sha256((out / "back.txt").read_bytes()).digest() == hashlib.sha256(original).digest()


def test_p2p_locate_and_search_work_without_the_maestro(network):
    nodes = network(["peer1", "peer2", "peer3"], files={"peer1": {"archivo1.txt": b"uno"}})
    nodes["maestro"].stop()
    answer = requests.get(nodes["peer3"].url + "/locate", params={"file": "archivo1.txt"}, timeout=10).json()
    assert answer["peers"][0]["name"] == "peer1"
    found = requests.get(nodes["peer2"].url + "/search", params={"query": "archivo", "ttl": "3"}, timeout=10).json()
    assert [(r["peer"], r["file"]) for r in found["results"]] == [("peer1", "archivo1.txt")]


def test_directory_survives_kill_9_of_the_maestro(network):
    nodes = network(["peer1"], files={"peer1": {"keep.txt": b"k"}})
    maestro = nodes["maestro"]
    wait_until(lambda: located(maestro, "keep.txt") == ["peer1"], what="registration")
    nodes["peer1"].stop()  # nobody will register again: what /directory shows after restart is from disk
    for proc in maestro.processes:
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(5)
    maestro.start().wait_healthy()
    files = requests.get(maestro.url + "/directory", timeout=5).json()["files"]
    assert [f["name"] for f in files] == ["keep.txt"]


def test_a_stopped_peer_expires_and_comes_back(network):
    nodes = network(["peer1", "peer2"], files={"peer2": {"b.txt": b"b"}})
    maestro = nodes["maestro"]
    wait_until(lambda: located(maestro, "b.txt") == ["peer2"], what="registration")
    grpc_proc = nodes["peer2"].processes[1]
    grpc_proc.signal_group(signal.SIGSTOP)  # silent, not gone: heartbeats stop
    try:
        wait_until(lambda: located(maestro, "b.txt") == [], timeout=5, what="peer2 expired")
    finally:
        grpc_proc.signal_group(signal.SIGCONT)
    wait_until(lambda: located(maestro, "b.txt") == ["peer2"], timeout=5, what="peer2 back")


def test_cli_errors_are_one_line_with_non_zero_exit(network, tmp_path):
    nodes = network(["peer1"])
    maestro = nodes["maestro"]
    cases = [
        ("download", "missing.txt", "--out", str(tmp_path / "x")),
        ("locate", "../../etc/passwd"),
        ("upload", str(tmp_path / "does-not-exist"), "--to", nodes["peer1"].url),
        ("upload", __file__, "--to", "http://127.0.0.1:1"),
        ("dummy-download", "nothing", "--from", "nobody"),
    ]
    for args in cases:
        result = client(maestro, *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert not (tmp_path / "x").exists()


def test_dummy_services_move_bytes_without_files(network):
    nodes = network(["peer1"])
    down = client(nodes["maestro"], "dummy-download", "x", "--from", "peer1", "--size", "5000000")
    assert down.returncode == 0, down.stderr
    assert "dummy-download x: 4.77 MiB in " in down.stdout and " MB/s) from peer1" in down.stdout
    up = client(nodes["maestro"], "dummy-upload", "--to", nodes["peer1"].url, "--size", "3000000")
    assert up.returncode == 0, up.stderr
    assert "to " in up.stdout and "which received 3000000 bytes" in up.stdout
    assert os.listdir(nodes["peer1"].config.shared_dir) == []


def test_download_shows_a_progress_bar_on_a_terminal_only(network, tmp_path):
    nodes = network(["peer1"], files={"peer1": {"big.bin": os.urandom(4 * 1024 * 1024)}})
    maestro = nodes["maestro"]
    wait_until(lambda: located(maestro, "big.bin") == ["peer1"], what="registration")
    terminal = Terminal(maestro.url, "download", "big.bin", "--out", str(tmp_path / "tty.bin"))
    assert terminal.wait(30) == 0, terminal.screen
    screen = terminal.screen
    assert b"big.bin:" in screen and b"%|" in screen and b"B/s]" in screen, screen  # tqdm: bar, rate, ETA
    assert b"downloaded big.bin: 4.00 MiB in " in screen and b" MB/s) from peer1 -> " in screen, screen
    piped = client(maestro, "download", "big.bin", "--out", str(tmp_path / "pipe.bin"))
    assert piped.returncode == 0, piped.stderr
    assert "%|" not in piped.stdout + piped.stderr and piped.stderr == ""
    assert piped.stdout.startswith("downloaded big.bin: 4.00 MiB in ")


def test_access_log_false_leaves_the_request_lines_out(network):
    from common.config import Settings

    nodes = network(["peer1"], settings=Settings(heartbeat_interval=0.5, access_log=False))
    maestro, peer1 = nodes["maestro"], nodes["peer1"]
    for url in (maestro.url + "/peers", peer1.url + "/files"):
        assert requests.get(url, timeout=5).status_code == 200
    wait_until(lambda: "registered at" in peer1.processes[1].log.read_text(), what="peer1's registration line")
    for node in (maestro, peer1):
        rest_log = node.processes[0].log.read_text()
        assert "Booting worker" in rest_log  # gunicorn's own lines are still there
        assert "HTTP/1.1" not in rest_log, rest_log[-500:]  # no line per request
