"""Transfers: verified, resumable, multi-source downloads; uploads that land whole or not at all; limits."""

from __future__ import annotations

import os
import re
import threading

import grpc
import pytest

from client.download import download
from client.partial import PartialFile
from common import transfer_pb2
from common.errors import AlreadyExists, Busy, DataLoss, TooLarge, from_rpc_error
from peer_app.state import open_db
from tests.support import MiB, leftovers, sha, wait_until

# -- in-process server: fixtures serve, stub_for and dl live in tests/conftest.py -------------------


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
    result = download("empty.bin", dl / "empty.bin", [{"name": "p", "grpc_address": address}])
    assert (dl / "empty.bin").read_bytes() == b"" and result.sha256 == sha(b"")


def test_download_from_two_holders_is_verified_and_uses_both(serve, dl):
    data = os.urandom(6 * MiB + 123)
    holders = []
    for name in ("a", "b"):
        address, shared = serve()
        (shared / "f.bin").write_bytes(data)
        holders.append({"name": name, "grpc_address": address})
    result = download("f.bin", dl / "f.bin", holders, expected_sha256=sha(data), size=len(data), piece_size=256 * 1024)
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
    result = download(
        "f.bin",
        dl / "f.bin",
        [{"name": "p", "grpc_address": address}],
        expected_sha256=sha(data),
        size=len(data),
        piece_size=256 * 1024,
    )
    assert (dl / "f.bin").read_bytes() == data
    assert result.resumed == 3 * 256 * 1024
    assert result.sources == {"p": len(data) - result.resumed}
    assert leftovers(dl) == []


def test_wrong_expected_hash_is_data_loss_and_leaves_nothing(serve, dl):
    address, shared = serve()
    (shared / "f.bin").write_bytes(b"x" * 1000)
    with pytest.raises(DataLoss):
        download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], expected_sha256="0" * 64, size=1000)
    assert list(dl.iterdir()) == []


def test_bytes_that_do_not_match_the_hash_are_discarded(serve, dl, peer_config):
    """A holder whose index still names the old hash (bytes flipped since, unseen as yet): caught at the end."""
    address, shared = serve()
    path = shared / "f.bin"
    path.write_bytes(b"a" * 5000)
    download("f.bin", dl / "first.bin", [{"name": "p", "grpc_address": address}])  # hash cached
    st = path.stat()
    path.write_bytes(b"b" * 5000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # the new ctime would give the change away (the holder would withhold the file): the cache is made to miss it
    open_db(peer_config.db_path).connect().execute("UPDATE file_hashes SET ctime_ns = ?", (path.stat().st_ctime_ns,))
    with pytest.raises(DataLoss, match="sha256 mismatch"):
        download(
            "f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], expected_sha256=sha(b"a" * 5000), size=5000
        )
    assert leftovers(dl) == [] and not (dl / "f.bin").exists()


def test_existing_target_is_kept_unless_overwrite(serve, dl):
    address, shared = serve()
    (shared / "f.bin").write_bytes(b"new")
    (dl / "f.bin").write_bytes(b"old")
    holders = [{"name": "p", "grpc_address": address}]
    with pytest.raises(AlreadyExists):
        download("f.bin", dl / "f.bin", holders)
    download("f.bin", dl / "f.bin", holders, overwrite=True)
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
    assert "in progress" in (err.value.details() or "")
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
        with pytest.raises(
            Busy, match=r"limit of 1 concurrent transfers; retry shortly \(still so after \d+ tries"
        ) as err:
            download("archivo1.txt", dl / "a.txt", [{"name": "p", "grpc_address": address}], retry_for=1.5)
        # Retried, not given up on at once (the pauses and the time budget: tests/unit/test_retry.py's clock).
        tries = re.search(r"after (\d+) tries", err.value.detail)
        assert tries is not None and int(tries[1]) >= 2
    finally:
        gate.set()
        holding.result()
    assert list(dl.iterdir()) == []
