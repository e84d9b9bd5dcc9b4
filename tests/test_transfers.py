"""Transfers: verified, resumable, multi-source downloads; uploads that land whole or not at all; limits."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import requests

from client.download import Download
from client.partial import PART_MARK, PartialFile
from common import transfer_pb2, transfer_pb2_grpc
from common.config import Settings
from common.errors import AlreadyExists, Busy, DataLoss, TooLarge, from_rpc_error
from common.rpc import CHANNEL_OPTIONS
from peer_app.grpc_server import create_server
from peer_app.storage import TMP_PREFIX
from tests.support import ROOT, Node, wait_until

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files left in a folder."""
    return sorted(p.name for p in folder.iterdir() if TMP_PREFIX in p.name or PART_MARK in p.name)


# -- in-process server ---------------------------------------------------------------------------
@pytest.fixture
def serve(peer_config):
    """Start in-process gRPC servers on port 0 with the given settings; yield (address, shared folder)."""
    servers = []

    def start(**settings):
        config = replace(peer_config, settings=replace(peer_config.settings, **settings))
        server, port, _ = create_server(config, "127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", Path(config.shared_dir)

    yield start
    for server in servers:
        server.stop(None)


@pytest.fixture
def stub_for():
    channels = []

    def make(address):
        channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        channels.append(channel)
        return transfer_pb2_grpc.FileTransferStub(channel)

    yield make
    for channel in channels:
        channel.close()


@pytest.fixture
def dl(tmp_path):
    """An empty folder to download into."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def paused_upload(name: str, data: bytes, gate: threading.Event, **first):
    """An upload request stream that sends its first chunk, then waits for gate."""

    def chunks():
        yield transfer_pb2.FileChunk(filename=name, data=data[:1000], size=len(data), sha256=sha(data), **first)
        gate.wait(10)
        yield transfer_pb2.FileChunk(data=data[1000:])

    return chunks()


def test_download_request_honours_offset_and_length_and_names_the_content(serve, stub_for):
    address, shared = serve()
    data = os.urandom(100_000)
    (shared / "f.bin").write_bytes(data)
    chunks = list(
        stub_for(address).Download(
            transfer_pb2.FileRequest(filename="f.bin", offset=5000, length=20000, chunk_size=8192), timeout=10
        )
    )
    assert b"".join(c.data for c in chunks) == data[5000:25000]
    assert [c.offset for c in chunks] == [5000 + i * 8192 for i in range(len(chunks))]
    assert (chunks[0].size, chunks[0].sha256) == (len(data), sha(data))


def test_empty_file_still_tells_its_size_and_hash(serve, stub_for, dl):
    address, shared = serve()
    (shared / "empty.bin").write_bytes(b"")
    chunks = list(stub_for(address).Download(transfer_pb2.FileRequest(filename="empty.bin"), timeout=10))
    assert [(c.data, c.size, c.sha256) for c in chunks] == [(b"", 0, sha(b""))]
    result = Download("empty.bin", dl / "empty.bin", [{"name": "p", "grpc_address": address}]).run()
    assert (dl / "empty.bin").read_bytes() == b"" and result.sha256 == sha(b"")


def test_download_from_two_holders_is_verified_and_uses_both(serve, dl):
    data = os.urandom(6 * MiB + 123)
    holders = []
    for name in ("a", "b"):
        address, shared = serve()
        (shared / "f.bin").write_bytes(data)
        holders.append({"name": name, "grpc_address": address})
    result = Download(
        "f.bin", dl / "f.bin", holders, expected_sha256=sha(data), size=len(data), piece_size=256 * 1024
    ).run()
    assert (dl / "f.bin").read_bytes() == data
    assert set(result.sources) == {"a", "b"} and sum(result.sources.values()) == len(data)
    assert leftovers(dl) == []


def test_partial_file_keeps_finished_pieces_for_the_same_content_only(dl):
    part = PartialFile(dl / "f.bin", 10, "ab" * 32, piece_size=4)
    assert (part.pieces, part.missing()) == (3, [0, 1, 2])
    part.write(4, b"4567")
    part.mark_done(1)
    part.close()
    again = PartialFile(dl / "f.bin", 10, "ab" * 32, piece_size=1024)  # the journal's piece size wins
    assert (again.missing(), again.done_bytes, again.piece_size) == ([0, 2], 4, 4)
    again.close()
    other = PartialFile(dl / "f.bin", 10, "cd" * 32, piece_size=4)
    assert other.missing() == [0, 1, 2]
    other.discard()


def test_download_continues_a_partial_file(serve, dl):
    address, shared = serve()
    data = os.urandom(MiB + 5)
    (shared / "f.bin").write_bytes(data)
    part = PartialFile(dl / "f.bin", len(data), sha(data), piece_size=256 * 1024)
    for piece in (0, 1, 3):
        offset, length = part.piece_range(piece)
        part.write(offset, data[offset : offset + length])
        part.mark_done(piece)
    part.close()
    result = Download(
        "f.bin",
        dl / "f.bin",
        [{"name": "p", "grpc_address": address}],
        expected_sha256=sha(data),
        size=len(data),
        piece_size=256 * 1024,
    ).run()
    assert (dl / "f.bin").read_bytes() == data
    assert result.resumed == 3 * 256 * 1024
    assert result.sources == {"p": len(data) - result.resumed}
    assert leftovers(dl) == []


def test_wrong_expected_hash_is_data_loss_and_leaves_nothing(serve, dl):
    address, shared = serve()
    (shared / "f.bin").write_bytes(b"x" * 1000)
    with pytest.raises(DataLoss):
        Download(
            "f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], expected_sha256="0" * 64, size=1000
        ).run()
    assert list(dl.iterdir()) == []


def test_bytes_that_do_not_match_the_hash_are_discarded(serve, dl):
    """A holder whose index still names the old hash (same size and mtime): caught at the end."""
    address, shared = serve()
    path = shared / "f.bin"
    path.write_bytes(b"a" * 5000)
    Download("f.bin", dl / "first.bin", [{"name": "p", "grpc_address": address}]).run()  # hash cached
    st = path.stat()
    path.write_bytes(b"b" * 5000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataLoss, match="sha256 mismatch"):
        Download(
            "f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], expected_sha256=sha(b"a" * 5000), size=5000
        ).run()
    assert leftovers(dl) == [] and not (dl / "f.bin").exists()


def test_existing_target_is_kept_unless_overwrite(serve, dl):
    address, shared = serve()
    (shared / "f.bin").write_bytes(b"new")
    (dl / "f.bin").write_bytes(b"old")
    holders = [{"name": "p", "grpc_address": address}]
    with pytest.raises(AlreadyExists):
        Download("f.bin", dl / "f.bin", holders).run()
    Download("f.bin", dl / "f.bin", holders, overwrite=True).run()
    assert (dl / "f.bin").read_bytes() == b"new"


# -- uploads -----------------------------------------------------------------------------------
def upload(stub, name, data, *, declared_size=None, digest=None, overwrite=False):
    def chunks():
        yield transfer_pb2.FileChunk(
            filename=name,
            data=data[:4096],
            overwrite=overwrite,
            size=len(data) if declared_size is None else declared_size,
            sha256=sha(data) if digest is None else digest,
        )
        for i in range(4096, len(data), 4096):
            yield transfer_pb2.FileChunk(data=data[i : i + 4096])

    return stub.Upload(chunks(), timeout=10)


@pytest.mark.parametrize(
    ("size", "kwargs", "code", "error"),
    [
        (MiB, {"digest": "0" * 64}, grpc.StatusCode.DATA_LOSS, DataLoss),
        (MiB + 1, {}, grpc.StatusCode.RESOURCE_EXHAUSTED, TooLarge),
        (MiB + 1, {"declared_size": 100}, grpc.StatusCode.RESOURCE_EXHAUSTED, TooLarge),  # lies: cut at the limit
    ],
    ids=["hash-mismatch", "declared-over-limit", "sent-over-limit"],
)
def test_refused_upload_leaves_nothing(serve, stub_for, size, kwargs, code, error):
    address, shared = serve(max_upload_bytes=MiB)
    before = sorted(p.name for p in shared.iterdir())
    with pytest.raises(grpc.RpcError) as err:
        upload(stub_for(address), "up.bin", os.urandom(size), **kwargs)
    assert err.value.code() == code
    assert type(from_rpc_error(err.value)) is error  # the client names the exact error
    assert sorted(p.name for p in shared.iterdir()) == before


def test_upload_does_not_replace_an_existing_file_unless_overwrite(serve, stub_for):
    address, shared = serve()
    stub = stub_for(address)
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, "archivo1.txt", b"replaced\n")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (shared / "archivo1.txt").read_bytes() == b"hola\n"
    upload(stub, "archivo1.txt", b"replaced\n", overwrite=True)
    assert (shared / "archivo1.txt").read_bytes() == b"replaced\n"


def test_concurrent_uploads_of_one_name_cannot_interleave(serve, stub_for):
    address, shared = serve()
    stub = stub_for(address)
    first, gate = os.urandom(50_000), threading.Event()
    pending = stub.Upload.future(paused_upload("same.bin", first, gate), timeout=10)
    wait_until(lambda: leftovers(shared), what="the first upload's temporary file")
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, "same.bin", os.urandom(50_000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "in progress" in err.value.details()
    assert type(from_rpc_error(err.value)) is Busy
    gate.set()
    assert pending.result().ok
    assert (shared / "same.bin").read_bytes() == first and leftovers(shared) == []


def test_transfers_beyond_the_limit_are_refused_with_a_clear_message(serve, stub_for, dl):
    address, shared = serve(max_concurrent_transfers=1)
    gate = threading.Event()
    holding = stub_for(address).Upload.future(paused_upload("slow.bin", os.urandom(5000), gate), timeout=10)
    wait_until(lambda: leftovers(shared), what="an upload holding the only slot")
    try:
        with pytest.raises(Busy, match="limit of 1 concurrent transfers"):
            Download("archivo1.txt", dl / "a.txt", [{"name": "p", "grpc_address": address}]).run()
    finally:
        gate.set()
        holding.result()
    assert list(dl.iterdir()) == []


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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_download_of_a_file_changed_after_registering_fails_cleanly(network, tmp_path):
    slow_beats = Settings(heartbeat_interval=30.0, request_timeout=1.0)  # the Maestro keeps the old hash
    nodes = network(["peer1"], files={"peer1": {"doc.txt": b"version one\n"}}, settings=slow_beats)
    wait_until(lambda: holders(nodes["maestro"], "doc.txt") == ["peer1"], what="peer1 registered")
    (tmp_path / "data" / "peer1" / "doc.txt").write_bytes(b"version two, longer\n")
    code, _, stderr = finish(cli(nodes["maestro"], "download", "doc.txt", "--out", str(tmp_path / "doc.txt")))
    assert code != 0
    assert "other content" in one_line_error(stderr)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_upload_over_the_limit_is_one_line_and_non_zero(network, tmp_path):
    nodes = network(["peer1"], settings=Settings(heartbeat_interval=0.5, request_timeout=1.0, max_upload_bytes=MiB))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * MiB))
    code, _, stderr = finish(cli(nodes["maestro"], "upload", str(source), "--to", nodes["peer1"].url))
    assert code != 0 and "limit" in one_line_error(stderr)
    assert not (tmp_path / "data" / "peer1" / "big.bin").exists()
