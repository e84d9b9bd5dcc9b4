"""The download as a library caller sees it: it cleans up after itself, names a full local disk,
and asks every holder before saying a file cannot be found."""

from __future__ import annotations

import errno
import os
import socket
import threading
from dataclasses import replace

import pytest

from client import lane as lane_client
from client import partial
from client.download import download
from client.partial import WriteFailed
from common.errors import Interrupted
from peer_app.grpc_server import create_server
from tests.support import MiB, leftovers, sha


@pytest.fixture
def holder(peer_config, tmp_path):
    """holder(name, files={name: bytes}, **settings): an in-process peer with its own folder -> its /locate entry."""
    started = []

    def start(name: str, files: dict[str, bytes] | None = None, **settings) -> dict:
        shared = tmp_path / f"shared-{name}"
        shared.mkdir()
        for file, data in (files or {}).items():
            (shared / file).write_bytes(data)
        config = replace(
            peer_config,
            name=name,
            shared_dir=str(shared),
            run_dir=str(tmp_path / f"run-{name}"),
            settings=replace(peer_config.settings, **settings),
        )
        server, port, servicer = create_server(config, "127.0.0.1:0")
        server.start()
        started.append((server, servicer))
        return {"name": name, "grpc_address": f"127.0.0.1:{port}"}

    yield start
    for server, servicer in started:
        servicer.close()
        server.stop(None)


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

    monkeypatch.setattr(partial.os, "pwrite", full_disk)
    with pytest.raises(WriteFailed) as err:
        download("f.bin", dl / "f.bin", [good], piece_size=MiB)
    assert err.value.exit_code == 1
    assert err.value.detail.startswith(f"no space left on device writing {dl}/.f.bin{partial.PART_MARK}")
    assert thread_errors == [] and fetch_threads() == []


def test_a_lane_socket_error_falls_back_to_the_stream(holder, dl, thread_errors, monkeypatch):
    """EHOSTUNREACH on a lane socket (a route lost mid-transfer) is a cut lane, not an error escaping a thread."""
    data = os.urandom(8 * MiB)
    good = holder("good", {"f.bin": data})

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
