"""Load and abuse on a 10-peer ring brought up by the launcher: nothing stalls, nothing lies.

One client's idle uploads and unread downloads, a SIGSTOPped client, slow readers over the fast
lane, 32 downloads released together at one holder, a stopped holder still listed as alive.
Real processes; every wait polls with a deadline; the heavier, longer variants live in
bench/load.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from common import transfer_pb2, transfer_pb2_grpc
from common.errors import Busy, from_rpc_error
from common.rpc import health_stub
from control import topology
from control.render import layout_for
from control.supervisor import Supervisor
from tests.lane_support import SlowReader
from tests.launcher_support import launcher, ring_topology
from tests.support import ROOT, MiB, Silence, wait_until

IDLE = 3.0  # transfer_idle_timeout of this ring: seconds before an idle call is cut
SETTINGS = {"transfer_idle_timeout": IDLE, "rest_workers": 1}
FILES = {  # name -> (size, holders)
    "big.bin": (16 * MiB, ["peer1", "peer2", "peer3"]),
    "hold.bin": (16 * MiB, ["peer4", "peer5"]),
    "victim.bin": (1 * MiB, ["peer5"]),
    "dead.bin": (16 * MiB, ["peer6", "peer7", "peer8"]),
    "lane.bin": (32 * MiB, ["peer9"]),
}
RAW = [("grpc.max_receive_message_length", 16 * MiB), ("grpc.use_local_subchannel_pool", 1)]


class Ring:
    def __init__(self, path: Path, digests: dict[str, str]) -> None:
        self.path = path
        self.topology = topology.load(path)
        self.layout = layout_for(self.topology)
        self.digests = digests

    def peer(self, name: str):
        return self.topology.peer(name)

    def log(self, program: str) -> Path:
        return self.layout.log_path(program)

    def pid(self, program: str) -> int:
        return next(p.pid for p in Supervisor(self.layout).processes() if p.name == program)

    def cli(self, *args: str, timeout: float = 90) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "peer_app.client", "--maestro", self.topology.maestro.url, "--json", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    path = ring_topology(folder, peers=10, settings=SETTINGS)
    t = topology.load(path)
    digests = {}
    for name, (size, holders) in FILES.items():
        data = os.urandom(size)
        digests[name] = hashlib.sha256(data).hexdigest()
        for holder in holders:
            (t.peer(holder).shared_dir / name).write_bytes(data)
    launcher("up", str(path), "--timeout", "60")
    try:
        yield Ring(path, digests)
    finally:
        launcher("down", str(path), check=False)


def serving(address: str) -> bool:
    """Health answers SERVING (one stuck behind the held calls would wait for their idle cut, and time out)."""
    with grpc.insecure_channel(address, options=RAW) as channel:
        answer = health_stub(channel).Check(health_pb2.HealthCheckRequest(service="p2pnet.FileTransfer"), timeout=IDLE)
        return answer.status == health_pb2.HealthCheckResponse.SERVING


def new_log_text(path: Path, mark: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(mark)
        return fh.read().decode("utf-8", "replace")


def test_idle_uploads_and_unread_downloads_from_one_client_stop_neither_health_nor_another_client(ring, tmp_path):
    peer5 = ring.peer("peer5")
    log = ring.log("peer5-grpc")
    mark = log.stat().st_size
    channel = grpc.insecure_channel(peer5.grpc_address, options=RAW)
    stub = transfer_pb2_grpc.FileTransferStub(channel)
    silence = Silence()
    try:
        downloads = [stub.Download(transfer_pb2.FileRequest(filename="hold.bin"), timeout=60) for _ in range(4)]
        for call in downloads:
            call.initial_metadata()  # admitted and sending; nobody will read
        uploads = [stub.Upload.future(silence.stream(), timeout=60) for _ in range(24)]

        # This connection's share is 8 of the 16 slots: beyond it calls are refused at once, unread.
        def refused(calls) -> list[grpc.RpcError]:
            errors = [c.exception() for c in calls if c.done()]
            return [e for e in errors if e is not None and type(from_rpc_error(e)) is Busy]

        wait_until(lambda: len(refused(uploads)) == 20, 3, what="20 uploads refused")
        more = [stub.Download(transfer_pb2.FileRequest(filename="hold.bin"), timeout=60) for _ in range(12)]
        wait_until(lambda: len(refused(more)) == 12, 3, what="12 more downloads refused")
        assert "8 concurrent transfers per connection" in (refused(more)[0].details() or "")

        # While the rest are held: health answers, and another client gets its file.
        assert all(serving(peer5.grpc_address) for _ in range(5))
        out = tmp_path / "victim.bin"
        proc = ring.cli("download", "victim.bin", "--from", peer5.rest_url, "--out", str(out))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert digest_of(out) == ring.digests["victim.bin"]

        # The 8 held calls lose their slots within the idle limit.
        def cut() -> str:
            text = new_log_text(log, mark)
            return text if text.count("cut by this peer") >= 8 else ""

        try:
            text = wait_until(cut, IDLE + 5, what="the 8 held calls cut")
        except AssertionError:
            print("LOG-SINCE-MARK:\n" + new_log_text(log, mark)[-6000:])
            raise
        cuts = [line.split(" from ")[0].rsplit(" ", 1)[-1] for line in text.splitlines() if "cut by this peer" in line]
        assert sorted(cuts) == ["Download"] * 4 + ["Upload"] * 4, text
    finally:
        silence.gate.set()
        channel.close()
    assert "Traceback" not in new_log_text(log, mark)


STOPPED_CLIENT = r"""
import sys, grpc
from common import transfer_pb2, transfer_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_receive_message_length", 16 << 20)])
stub = transfer_pb2_grpc.FileTransferStub(channel)
calls = [stub.Download(transfer_pb2.FileRequest(filename="hold.bin")) for _ in range(8)]
for call in calls:
    next(call)
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_stopped_client_loses_its_downloads_within_the_idle_limit(ring):
    peer4 = ring.peer("peer4")
    log = ring.log("peer4-grpc")
    mark = log.stat().st_size
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_CLIENT, peer4.grpc_address],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "reading" in proc.stdout.readline()
        os.kill(proc.pid, signal.SIGSTOP)
        # Cut by the idle limit; the server's keepalive would end them too, but never in under 5 s
        # (a ping's timeout), so this is the limit's doing.
        wait_until(
            lambda: new_log_text(log, mark).count("cut by this peer") == 8,
            IDLE + 2.5,
            what="the stopped client's calls cut",
        )
        assert serving(peer4.grpc_address)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGCONT)
        proc.wait(10)
    assert "Traceback" not in new_log_text(log, mark)


def test_slow_lane_readers_are_cut_at_the_streams_pace_and_a_real_download_gets_through(ring, tmp_path):
    """Every transfer slot of a peer held by lane readers taking 16 KiB every 2 s, with no credential.

    A stream's reader at that pace is cut within the idle limit; lanes used to be held as long
    as a few bytes moved (the whole file, minutes), and a real download failed busy (exit 6).
    """
    peer9 = ring.peer("peer9")
    log = ring.log("peer9-grpc")
    mark = log.stat().st_size
    slots = ring.topology.settings.max_concurrent_transfers
    channels = [grpc.insecure_channel(peer9.grpc_address, options=RAW) for _ in range(slots + 1)]
    stubs = [transfer_pb2_grpc.FileTransferStub(channel) for channel in channels]
    readers: list[SlowReader] = []
    try:
        tickets = [stub.OpenLane(transfer_pb2.FileRequest(filename="lane.bin"), timeout=10) for stub in stubs[:-1]]
        with pytest.raises(grpc.RpcError) as busy:  # each ticket holds one of the peer's transfer slots
            stubs[-1].OpenLane(transfer_pb2.FileRequest(filename="lane.bin"), timeout=10)
        assert type(from_rpc_error(busy.value)) is Busy
        readers = [SlowReader("127.0.0.1", t, "lane.bin", step=16 * 1024, every=2.0).start() for t in tickets]
        wait_until(lambda: all(r.received for r in readers), 5, what="every slow reader served")

        out = tmp_path / "lane.bin"
        proc = ring.cli("--retry-for", "20", "download", "lane.bin", "--from", peer9.rest_url, "--out", str(out))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert digest_of(out) == ring.digests["lane.bin"]
        # cut within the stream's limits: one 1 MiB block waits past the idle limit once the buffers are full
        wait_until(lambda: all(r.ended.is_set() for r in readers), IDLE + 5, what="every slow lane cut")
        assert max(r.ended_after or 0 for r in readers) < IDLE + 5
        text = new_log_text(log, mark)
        assert text.count("Lane lane.bin to 127.0.0.1 cut by this peer") == slots, text[-4000:]
    finally:
        for reader in readers:
            reader.stop()
        for channel in channels:
            channel.close()
    assert "Traceback" not in new_log_text(log, mark)


def test_32_downloads_released_together_at_one_holder_all_succeed(ring, tmp_path):
    """64 calls for 16 slots: the busy ones retry with backoff instead of failing."""
    peer1 = ring.peer("peer1")
    outs = [tmp_path / f"big-{i}.bin" for i in range(32)]
    procs = [ring.cli("download", "big.bin", "--from", peer1.rest_url, "--out", str(out)) for out in outs]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failures.append((proc.returncode, err.strip()))
    assert failures == []
    assert all(digest_of(out) == ring.digests["big.bin"] for out in outs)


def test_a_stopped_holder_still_listed_costs_nothing_when_the_others_finish(ring, tmp_path):
    out = tmp_path / "dead.bin"

    def download() -> tuple[float, dict]:
        out.unlink(missing_ok=True)
        started = time.monotonic()
        proc = ring.cli("download", "dead.bin", "--out", str(out))
        stdout, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert digest_of(out) == ring.digests["dead.bin"]
        return time.monotonic() - started, json.loads(stdout)

    baseline = min(download()[0] for _ in range(2))
    pid = ring.pid("peer7-grpc")
    os.kill(pid, signal.SIGSTOP)
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "peer_app.client", "--maestro", ring.topology.maestro.url, "--json"]
            + ["locate", "dead.bin"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "peer7" in {p["name"] for p in json.loads(listed.stdout)["peers"]}  # still listed as a holder
        seconds, answer = download()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "peer7" not in answer["from"]
    assert seconds < baseline + 2.0, f"{seconds:.2f}s with peer7 stopped against {baseline:.2f}s"
