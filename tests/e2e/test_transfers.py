"""Transfers through the CLI against real peer processes: failover, resume, cut uploads, limits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from client.partial import PART_MARK
from common.config import Settings
from peer_app.storage import TMP_PREFIX
from tests.support import ROOT, MiB, Node, leftovers, sha, wait_until


# -- end to end: real processes, the CLI ----------------------------------------------------------
def cli(maestro: Node, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "peer_app.client", "--maestro", maestro.url, "--json", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def grpc_process(node: Node):
    return next(p for p in node.processes if "peer_app.grpc_server" in p.args)


def holders(maestro: Node, name: str) -> list[str]:
    resp = requests.get(maestro.url + "/locate", params={"file": name}, timeout=5)
    return sorted(p["name"] for p in resp.json()["peers"]) if resp.status_code == 200 else []


def pieces_done(out: Path) -> int:
    journals = list(out.parent.glob(f".{out.name}{PART_MARK}*.journal"))
    return max((len(j.read_text().splitlines()) - 1 for j in journals), default=0)


THROTTLED = Settings(heartbeat_interval=0.5, request_timeout=1.0, max_transfer_rate=4 * MiB)


def test_download_fails_over_when_a_source_is_killed_mid_transfer(network, tmp_path):
    data = os.urandom(24 * MiB)
    nodes = network(
        ["peer1", "peer2"], files={"peer1": {"big.bin": data}, "peer2": {"big.bin": data}}, settings=THROTTLED
    )
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1", "peer2"], what="both holders")
    out = tmp_path / "big.bin"
    proc = cli(nodes["maestro"], "download", "big.bin", "--out", str(out), "--piece-size", str(MiB))
    wait_until(lambda: pieces_done(out) >= 2, what="a few pieces")
    grpc_process(nodes["peer1"]).signal_group(signal.SIGKILL)
    code, stdout, stderr = finish(proc)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert out.read_bytes() == data and report["sha256"] == sha(data)
    assert report["bytes_from"]["peer2"] > len(data) // 2
    assert leftovers(tmp_path) == []


def test_cut_download_resumes_from_the_same_peer_after_it_returns(network, tmp_path):
    data = os.urandom(16 * MiB)
    nodes = network(["peer1"], files={"peer1": {"big.bin": data}}, settings=THROTTLED)
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1"], what="peer1 registered")
    out = tmp_path / "big.bin"
    proc = cli(
        nodes["maestro"], "download", "big.bin", "--out", str(out), "--piece-size", str(MiB), "--stall-timeout", "1.5"
    )
    wait_until(lambda: pieces_done(out) >= 3, what="a few pieces")
    peer_grpc = grpc_process(nodes["peer1"])
    peer_grpc.signal_group(signal.SIGSTOP)  # a hung source: the client must give up within seconds
    try:
        started = time.monotonic()
        code, _, stderr = finish(proc, timeout=30)
        assert code != 0 and time.monotonic() - started < 15
        assert "run the same download again to resume" in one_line_error(stderr)
        assert not out.exists() and leftovers(tmp_path)
    finally:
        peer_grpc.signal_group(signal.SIGCONT)
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1"], what="peer1 back")
    code, stdout, stderr = finish(cli(nodes["maestro"], "download", "big.bin", "--out", str(out)))
    assert code == 0, stderr
    assert out.read_bytes() == data and json.loads(stdout)["resumed"] >= 3 * MiB
    assert leftovers(tmp_path) == []


def test_killed_client_resumes_from_another_holder(network, tmp_path):
    data = os.urandom(16 * MiB)
    nodes = network(["peer1", "peer2"], files={"peer1": {"big.bin": data}}, settings=THROTTLED)
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1"], what="peer1 registered")
    out = tmp_path / "big.bin"
    proc = cli(nodes["maestro"], "download", "big.bin", "--out", str(out), "--piece-size", str(MiB))
    wait_until(lambda: pieces_done(out) >= 3, what="a few pieces")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    (tmp_path / "data" / "peer2" / "big.bin").write_bytes(data)
    grpc_process(nodes["peer1"]).signal_group(signal.SIGKILL)  # only the new holder is left
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer2"], what="peer2 as the only holder")
    code, stdout, stderr = finish(cli(nodes["maestro"], "download", "big.bin", "--out", str(out)))
    assert code == 0, stderr
    report = json.loads(stdout)
    assert out.read_bytes() == data and report["resumed"] >= 3 * MiB and report["from"] == ["peer2"]


def test_download_of_a_file_changed_after_registering_fails_cleanly(network, tmp_path):
    # the Maestro keeps the old hash: no beat, and no scrub to find the new bytes and register them at once
    slow_beats = Settings(heartbeat_interval=30.0, request_timeout=1.0, scrub_rate=0)
    nodes = network(["peer1"], files={"peer1": {"doc.txt": b"version one\n"}}, settings=slow_beats)
    wait_until(lambda: holders(nodes["maestro"], "doc.txt") == ["peer1"], what="peer1 registered")
    (tmp_path / "data" / "peer1" / "doc.txt").write_bytes(b"version two, longer\n")
    code, _, stderr = finish(cli(nodes["maestro"], "download", "doc.txt", "--out", str(tmp_path / "doc.txt")))
    assert code != 0
    assert "other content" in one_line_error(stderr)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []


def test_killed_upload_leaves_nothing_on_the_peer(network, tmp_path):
    nodes = network(["peer1"], settings=THROTTLED)
    shared = tmp_path / "data" / "peer1"
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(16 * MiB))
    proc = cli(nodes["maestro"], "upload", str(source), "--to", nodes["peer1"].url)
    wait_until(
        lambda: any(p.stat().st_size > MiB for p in shared.iterdir() if TMP_PREFIX in p.name),
        what="an upload under way",
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    wait_until(lambda: not leftovers(shared), what="the peer to drop the temporary file")
    assert not (shared / "up.bin").exists()
    assert requests.get(nodes["peer1"].url + "/health", timeout=5).status_code == 200


def test_upload_over_the_limit_is_one_line_and_non_zero(network, tmp_path):
    nodes = network(["peer1"], settings=Settings(heartbeat_interval=0.5, request_timeout=1.0, max_upload_bytes=MiB))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * MiB))
    code, _, stderr = finish(cli(nodes["maestro"], "upload", str(source), "--to", nodes["peer1"].url))
    assert code != 0 and "limit" in one_line_error(stderr)
    assert not (tmp_path / "data" / "peer1" / "big.bin").exists()


def test_a_download_into_a_full_disk_is_one_line_naming_the_path(network, tmp_path):
    """A 2 MiB tmpfs, mounted in a mount namespace of the client's own, takes 8 MiB: exit 1, the path, no traceback."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a small tmpfs needs root and unshare(1) (a mount namespace of the client's own)")
    data = os.urandom(8 * MiB)
    nodes = network(["peer1"], files={"peer1": {"big.bin": data}})
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1"], what="peer1 registered")
    small = tmp_path / "small"
    small.mkdir()
    mount_then_run = 'mount -t tmpfs -o size=2m p2p-full "$0" && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", mount_then_run, str(small), sys.executable, "-m", "peer_app.client",
         "--maestro", nodes["maestro"].url, "download", "big.bin", "--out", str(small / "big.bin")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc.stderr)
    assert line.startswith(f"error: no space left on device writing {small}/.big.bin{PART_MARK}"), line


def test_a_silently_rotten_copy_heals_from_another_holder_and_is_named(network, tmp_path):
    """Bits flipped in peer2's copy, mtime put back: the CLI mends the file from peer1 and names peer2."""
    data = os.urandom(8 * MiB)
    nodes = network(["peer1", "peer2"], files={"peer1": {"big.bin": data}, "peer2": {"big.bin": data}})
    wait_until(lambda: holders(nodes["maestro"], "big.bin") == ["peer1", "peer2"], what="both holders")
    rotten = tmp_path / "data" / "peer2" / "big.bin"
    st = rotten.stat()
    with open(rotten, "r+b") as fh:
        for offset in range(7, len(data), 256 * 1024):  # a flipped bit in every 256 KiB: whatever peer2 sends is bad
            fh.seek(offset)
            fh.write(bytes([data[offset] ^ 0x10]))
    os.utime(rotten, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "big.bin"
    code, stdout, stderr = finish(cli(nodes["maestro"], "download", "big.bin", "--out", str(out)))
    assert code == 0, stderr
    report = json.loads(stdout)
    assert out.read_bytes() == data and report["sha256"] == sha(data)
    # peer2 sent bad bytes (named, its pieces fetched again from peer1), or, where a holder re-hashes a copy
    # that changed under it, peer2 itself said it now holds other content: either way it is named
    named = report["bad"].get("peer2") or report["trouble"].get("peer2", "")
    if not named:  # or peer2 noticed first (the flip moved its ctime): it withheld its copy and nobody asked it
        assert report["bytes_from"] == {"peer1": len(data)} and holders(nodes["maestro"], "big.bin") == ["peer1"]
        return
    assert "differed from peer1's copy" in named or "other content" in named or "withheld" in named, report
