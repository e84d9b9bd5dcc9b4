"""The download as a library caller sees it: it cleans up after itself, names a full local disk,
and asks every holder before saying a file cannot be found."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading

import blake3
import pytest

from client import lane as lane_client
from client import partial
from client.download import download
from client.partial import WriteFailed
from common.errors import DataLoss, Interrupted
from tests.support import MiB, leftovers, recording_server, sha


@pytest.fixture
def holder(peer_server):
    """holder(name, files={name: bytes}, **settings): an in-process peer with its own folder -> its /locate entry.

    holder.servicers[name] is its gRPC servicer (servicer.lane() its fast lane).
    """
    servicers = {}

    def start(name: str, files: dict[str, bytes] | None = None, **settings) -> dict:
        address, _, servicer = peer_server(name, files, **settings)
        servicers[name] = servicer
        return {"name": name, "grpc_address": address}

    start.servicers = servicers  # type: ignore[attr-defined]
    return start


@pytest.fixture
def silent_holder():
    """A holder's address where TCP connects but nothing ever answers (a stopped process)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield {"name": "silent", "grpc_address": f"127.0.0.1:{listener.getsockname()[1]}"}


@pytest.fixture
def thread_errors():
    """Exceptions that escaped any thread during the test (threading.excepthook prints them)."""
    caught: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: caught.append(args.exc_value)
    yield caught
    threading.excepthook = previous


def fetch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("p2p-fetch")]


def test_a_silent_holder_is_left_without_a_thread_or_a_closed_channel_error(holder, silent_holder, dl, thread_errors):
    """The download ends when the good holder is done; the worker still waiting on the silent one stops with it."""
    data = os.urandom(2 * MiB)
    good = holder("good", {"f.bin": data})
    result = download(
        "f.bin", dl / "f.bin", [good, silent_holder], expected_sha256=sha(data), size=len(data), connect_timeout=30
    )
    assert (dl / "f.bin").read_bytes() == data and result.sources == {"good": len(data)}
    assert fetch_threads() == []  # joined before the channels were closed
    assert result.seconds < 30  # the wait on the silent holder was cut, not timed out
    assert thread_errors == []


def test_ctrl_c_in_a_library_caller_stops_every_worker_before_the_file_is_closed(holder, dl, thread_errors):
    data = os.urandom(8 * MiB)
    slow = holder("slow", {"f.bin": data}, max_transfer_rate=2 * MiB)
    seen = []

    def progress(n: int) -> None:
        seen.append(n)
        if sum(seen) >= MiB:
            raise KeyboardInterrupt  # what a library caller's Ctrl-C looks like in its thread

    with pytest.raises(Interrupted, match="run the same download again to resume"):
        download("f.bin", dl / "f.bin", [slow], piece_size=256 * 1024, progress=progress)
    assert fetch_threads() == []  # nothing can write into the partial file any more
    assert thread_errors == []
    assert len(leftovers(dl)) == 2  # the partial file and its journal, kept for the next run
    result = download("f.bin", dl / "f.bin", [slow], piece_size=256 * 1024)
    assert (dl / "f.bin").read_bytes() == data and result.resumed >= MiB


def test_a_full_local_disk_is_named_with_the_path_and_no_thread_traceback(holder, dl, thread_errors, monkeypatch):
    data = os.urandom(4 * MiB)
    good = holder("good", {"f.bin": data})
    real = os.pwrite

    def full_disk(fd: int, data, offset: int) -> int:
        if partial.PART_MARK in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    def full_disk_splice(src: int, dst: int, count: int, *args, **kwargs) -> int:
        if partial.PART_MARK in os.readlink(f"/proc/self/fd/{dst}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_splice(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(partial.os, "pwrite", full_disk)
    if hasattr(os, "splice"):  # a lane splices its bytes into the file
        real_splice = os.splice
        monkeypatch.setattr(os, "splice", full_disk_splice)
    with pytest.raises(WriteFailed) as err:
        download("f.bin", dl / "f.bin", [good], piece_size=MiB)
    assert err.value.exit_code == 1
    assert err.value.detail.startswith(f"no space left on device writing {dl}/.f.bin{partial.PART_MARK}")
    assert thread_errors == [] and fetch_threads() == []


@pytest.mark.parametrize("splice", [False, True], ids=["recv_into", "splice"])
def test_a_lane_socket_error_falls_back_to_the_stream(holder, dl, thread_errors, monkeypatch, splice):
    """EHOSTUNREACH on a lane socket (a route lost mid-transfer) is a cut lane, not an error escaping a thread."""
    data = os.urandom(8 * MiB)
    good = holder("good", {"f.bin": data})
    if splice and not lane_client.SPLICE:
        pytest.skip("no os.splice on this system")
    monkeypatch.setattr(lane_client, "SPLICE", splice)
    if splice:
        spliced = [0]
        real_splice = os.splice

        def lost_splice(src: int, dst: int, count: int, *args, **kwargs) -> int:
            if stat.S_ISSOCK(os.fstat(src).st_mode):
                if spliced[0] >= MiB:
                    raise OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
                spliced[0] += (n := real_splice(src, dst, count, *args, **kwargs))
                return n
            return real_splice(src, dst, count, *args, **kwargs)

        monkeypatch.setattr(os, "splice", lost_splice)

    class LostRoute(socket.socket):
        """A client socket whose route goes away after the first MiB."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.client_side = kwargs.get("fileno") is None and (len(args) < 4 or args[3] is None)
            self.received = 0

        def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
            if self.client_side and self.received >= MiB:
                raise OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
            n = super().recv_into(buffer, nbytes, flags)
            self.received += n
            return n

    monkeypatch.setattr(lane_client.socket, "socket", LostRoute)
    result = download("f.bin", dl / "f.bin", [good], piece_size=MiB, streams_per_source=1)
    assert (dl / "f.bin").read_bytes() == data
    assert "no route to host" in result.lane_off["good"]
    assert thread_errors == []


def test_a_holder_without_the_file_does_not_end_the_search_for_its_content(holder, dl):
    data = os.urandom(MiB)
    without = holder("without")
    good = holder("good", {"f.bin": data})
    result = download("f.bin", dl / "f.bin", [without, good])  # no expected digest: asked of the holders
    assert (dl / "f.bin").read_bytes() == data and result.sources == {"good": len(data)}


# -- bad copies heal ------------------------------------------------------------------------------
def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def rot(servicer) -> None:
    """Make this holder's lane send every range with its first bit flipped (a copy gone bad under its digest)."""

    def rotten(conn, fd: int, offset: int, length: int, moved: list[int], progress) -> None:
        data = bytearray(os.pread(fd, length, offset))
        data[0] ^= 1
        conn.sendall(data)
        moved[0] = length

    servicer.lane()._sendfile = rotten


@pytest.fixture
def rechecks():
    """A REST API that only records what it is asked (and answers 404, as a peer without /recheck does)."""
    with recording_server(404, b'{"error": "not_found", "detail": "no such route"}') as served:
        yield served


def asked(calls: list) -> list[tuple[str, str, dict]]:
    """(method, path, JSON body) of each request the REST API saw."""
    return [(method, path, json.loads(body or b"{}")) for method, path, _, body in calls]


def test_bad_bytes_from_one_holder_are_fetched_again_from_another_and_named(holder, dl, rechecks):
    data = os.urandom(6 * MiB)
    url, calls = rechecks
    good = {**holder("good", {"f.bin": data}, max_transfer_rate=8 * MiB), "blake3": b3(data)}  # rotten sends too
    bad = {**holder("rotten", {"f.bin": data}), "rest_url": url, "blake3": b3(data)}  # advertised, as before it rotted
    rot(holder.servicers["rotten"])
    result = download("f.bin", dl / "f.bin", [bad, good], expected_sha256=sha(data), size=len(data), piece_size=MiB)
    assert (dl / "f.bin").read_bytes() == data
    assert list(result.bad) == ["rotten"] and "differed from good's copy" in result.bad["rotten"], result
    assert asked(calls) == [("POST", "/recheck", {"file": "f.bin"})]  # told to look at its copy (404 here: ignored)


def test_bad_bytes_from_the_only_holder_fail_naming_it(holder, dl, rechecks):
    data = os.urandom(2 * MiB)
    url, calls = rechecks
    bad = {**holder("rotten", {"f.bin": data}), "rest_url": url, "blake3": b3(data)}
    rot(holder.servicers["rotten"])
    with pytest.raises(DataLoss, match=r"^bad bytes from rotten: blake3 mismatch for f\.bin") as err:
        download("f.bin", dl / "f.bin", [bad], expected_sha256=sha(data), size=len(data))
    assert err.value.exit_code == 5 and "no other holder to fetch them from" in err.value.detail
    assert asked(calls) == [("POST", "/recheck", {"file": "f.bin"})]
    assert leftovers(dl) == [] and not (dl / "f.bin").exists()
