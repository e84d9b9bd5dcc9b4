"""The fast lane: tickets that work once, for one file, range and caller; sendfile bytes verified by BLAKE3;
mixed lane and stream sources; fallback to the gRPC stream when a lane cannot connect or is cut."""

from __future__ import annotations

import logging
import os
import re
import secrets
import select
import socket
import struct
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import blake3
import grpc
import pytest

from client import lane, pace
from client.download import download
from client.partial import PartialFile
from client.transfer import TransferClient
from common import transfer_pb2, transfer_pb2_grpc
from common.errors import Busy, DataLoss, NoLane, Unauthorized, from_rpc_error
from common.lane import HELLO_SIZE, OK, encode_hello, read_reply
from common.rpc import CHANNEL_OPTIONS
from peer_app import lane as lane_server
from peer_app.grpc_server import create_server
from peer_app.interceptor import CallInterceptor, RpcCall
from tests.lane_support import SlowReader
from tests.support import MiB, leftovers, sha, wait_until


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.fixture
def serve(peer_server):
    """serve(name="peer1", **settings): an in-process gRPC peer -> (address, shared folder, servicer)."""
    return lambda name="peer1", **settings: peer_server(name, **settings)


@pytest.fixture
def client():
    made = []

    def make(address: str) -> TransferClient:
        made.append(TransferClient(address))
        return made[-1]

    yield make
    for c in made:
        c.close()


def receive(ticket, name: str, offset: int | None = None, length: int | None = None, **kwargs) -> bytes:
    """The bytes a lane delivers for this ticket (offset and length default to the ticket's)."""
    got = bytearray()

    def write(position: int, block: memoryview | lane.PipedBlock) -> bool:
        assert isinstance(block, memoryview)  # received into the buffer: no splice asked for
        assert position == (ticket.offset if offset is None else offset) + len(got)
        got.extend(block)
        return True

    lane.fetch(
        "127.0.0.1",
        ticket.port,
        ticket.ticket,
        name,
        ticket.offset if offset is None else offset,
        ticket.length if length is None else length,
        write,
        **kwargs,
    )
    return bytes(got)


# -- tickets ---------------------------------------------------------------------------------------
def test_a_ticket_delivers_its_range_and_names_the_content(serve, client):
    address, shared, _ = serve()
    data = os.urandom(3 * MiB + 17)
    (shared / "f.bin").write_bytes(data)
    ticket = client(address).open_lane("f.bin", 1000, 2 * MiB)
    assert (ticket.size, ticket.sha256, ticket.blake3) == (len(data), sha(data), b3(data))
    assert (ticket.offset, ticket.length) == (1000, 2 * MiB) and len(ticket.ticket) == 32
    assert receive(ticket, "f.bin") == data[1000 : 1000 + 2 * MiB]
    to_end = client(address).open_lane("f.bin", 3 * MiB, 0)  # length 0: to the end of the file
    assert to_end.length == 17 and receive(to_end, "f.bin") == data[3 * MiB :]


def test_a_fixed_lane_port_is_the_one_tickets_name(peer_config, tmp_path, client):
    """Containers publish only the ports they are told: a peer with lane_port listens there."""
    from tests.support import free_port

    fixed = free_port()
    shared = tmp_path / "fixed-shared"
    shared.mkdir()
    (shared / "f.bin").write_bytes(b"x" * 1000)
    config = replace(peer_config, shared_dir=str(shared), run_dir=str(tmp_path / "fixed-run"), lane_port=fixed)
    server, port, servicer = create_server(config, "127.0.0.1:0")
    server.start()
    try:
        ticket = client(f"127.0.0.1:{port}").open_lane("f.bin", 0, 0)
        assert ticket.port == fixed and receive(ticket, "f.bin") == b"x" * 1000
    finally:
        servicer.close()
        server.stop(None)


def test_a_ticket_works_once(serve, client):
    address, shared, _ = serve()
    (shared / "f.bin").write_bytes(b"x" * 5000)
    ticket = client(address).open_lane("f.bin", 0, 5000)
    assert receive(ticket, "f.bin") == b"x" * 5000
    with pytest.raises(lane.LaneError, match="unknown or already used") as err:
        receive(ticket, "f.bin")
    assert err.value.kind == "refused"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"name": "other.bin"}, "another file or range"),
        ({"offset": 1}, "another file or range"),
        ({"length": 4999}, "another file or range"),
        ({"ticket": secrets.token_bytes(32)}, "unknown or already used"),
        ({"source": "127.0.0.2"}, "another caller"),
    ],
)
def test_a_ticket_for_another_file_range_or_caller_is_refused_and_burnt(serve, client, change, reason):
    address, shared, _ = serve()
    for name in ("f.bin", "other.bin"):
        (shared / name).write_bytes(b"y" * 5000)
    ticket = client(address).open_lane("f.bin", 0, 5000)
    presented = change.get("ticket", ticket.ticket)
    source = (change["source"], 0) if "source" in change else None
    with pytest.raises(lane.LaneError, match=reason):
        lane.fetch(
            "127.0.0.1",
            ticket.port,
            presented,
            change.get("name", "f.bin"),
            change.get("offset", 0),
            change.get("length", 5000),
            lambda position, block: True,
            source_address=source,
        )
    if "ticket" not in change:  # a ticket shown wrongly is used up: it cannot be tried again
        with pytest.raises(lane.LaneError, match="unknown or already used"):
            receive(ticket, "f.bin")


def test_an_expired_ticket_is_refused_and_gives_its_slot_back(serve, client):
    address, shared, servicer = serve(max_concurrent_transfers=1)
    (shared / "f.bin").write_bytes(b"z" * 5000)
    ticket = client(address).open_lane("f.bin", 0, 5000)
    with pytest.raises(Busy, match="limit of 1 concurrent"):  # the unused ticket holds the only slot
        client(address).open_lane("f.bin", 0, 5000)
    server = servicer.lane()
    real_clock = server.clock
    server.clock = lambda: real_clock() + server.ttl + 1  # the ticket's seconds are over
    with pytest.raises(lane.LaneError, match="expired"):
        receive(ticket, "f.bin")
    server.clock = real_clock
    assert receive(client(address).open_lane("f.bin", 0, 5000), "f.bin") == b"z" * 5000


def test_unredeemed_tickets_expire_on_their_own(serve, client):
    address, shared, servicer = serve(max_concurrent_transfers=1)
    (shared / "f.bin").write_bytes(b"z" * 10)
    client(address).open_lane("f.bin", 0, 10)
    server = servicer.lane()
    real_clock = server.clock
    server.clock = lambda: real_clock() + server.ttl + 1
    server._sweep()  # what the accept loop does every second
    assert server.outstanding == 0
    server.clock = real_clock
    client(address).open_lane("f.bin", 0, 10)  # the slot is free again


def test_a_file_changed_after_its_ticket_is_not_sent(serve, client):
    address, shared, _ = serve()
    (shared / "f.bin").write_bytes(b"a" * 5000)
    ticket = client(address).open_lane("f.bin", 0, 5000)
    (shared / "f.bin").write_bytes(b"b" * 6000)
    with pytest.raises(lane.LaneError, match="changed since the ticket") as err:
        receive(ticket, "f.bin")
    assert err.value.kind == "gone"


def test_open_lane_refuses_bad_names_and_ranges_like_download(serve, client):
    address, shared, _ = serve(transfer_slots_per_connection=0)  # all 16 slots to this one client connection
    (shared / "f.bin").write_bytes(b"a" * 10)
    stub = transfer_pb2_grpc.FileTransferStub(grpc.insecure_channel(address, options=CHANNEL_OPTIONS))
    for request, code in [
        (transfer_pb2.FileRequest(filename="../etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT),
        (transfer_pb2.FileRequest(filename="missing.bin"), grpc.StatusCode.NOT_FOUND),
        (transfer_pb2.FileRequest(filename="f.bin", offset=11), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.OpenLane(request, timeout=5)
        assert err.value.code() == code
    # every refused OpenLane gave its slot back: as many tickets as slots can still be had
    assert len([client(address).open_lane("f.bin", 0, 10) for _ in range(16)]) == 16


def test_a_lane_turned_off_says_so(serve, client):
    address, shared, _ = serve(lane_ticket_seconds=0)
    (shared / "f.bin").write_bytes(b"a" * 10)
    with pytest.raises(NoLane, match="turned off"):
        client(address).open_lane("f.bin", 0, 10)


def test_garbage_on_the_lane_port_is_dropped_without_harm(serve, client):
    address, shared, servicer = serve()
    (shared / "f.bin").write_bytes(b"a" * 10)
    port = client(address).open_lane("f.bin", 0, 10).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"x" * 100)
        try:
            answer = s.recv(100)
        except ConnectionResetError:  # closed with our bytes unread
            answer = b""
        assert answer == b""  # nothing sent back
    assert servicer.lane().outstanding == 1  # the real ticket is still there, untouched


def test_a_hello_trickled_byte_by_byte_is_dropped_at_the_hello_deadline(serve, client):
    address, shared, servicer = serve()
    (shared / "f.bin").write_bytes(b"a" * 10)
    port = client(address).open_lane("f.bin", 0, 10).port
    servicer.lane().hello_timeout = 0.5  # the whole hello, however slowly it comes
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        while sent < HELLO_SIZE:
            try:
                s.sendall(b"P")
                sent += 1
                # A stranger's pace: one byte per 0.3 s, each within a per-read timeout; readable = closed.
                readable, _, _ = select.select([s], [], [], 0.3)
                if readable and s.recv(1) == b"":
                    break
            except OSError:  # reset or broken pipe: closed by the peer
                break
    assert sent < HELLO_SIZE  # dropped long before a whole hello was in, not held for it (17 s at this pace)


# -- pace ------------------------------------------------------------------------------------------
PACE = {
    # one 64 KiB block waits past the idle limit: 4 KiB a second is 16 s a block
    "idle": ({"transfer_idle_timeout": 0.5, "transfer_stall_timeout": 0}, 4096),
    # each block goes in time, but at 80 KiB/s against a minimum of 1 MiB/s the budget runs out
    "stall": ({"transfer_idle_timeout": 5, "transfer_stall_timeout": 0.5, "transfer_min_rate": MiB}, 16 * 1024),
}


@pytest.mark.parametrize("rule", list(PACE), ids=list(PACE))
def test_a_lane_reader_behind_the_streams_pace_is_cut_and_its_slot_comes_back(serve, client, stub_for, caplog, rule):
    settings, step = PACE[rule]
    address, shared, _ = serve(max_concurrent_transfers=1, chunk_size=64 * 1024, **settings)
    (shared / "f.bin").write_bytes(os.urandom(32 * MiB))
    ticket = client(address).open_lane("f.bin", 0, 0)  # the peer's only transfer slot
    reader = SlowReader("127.0.0.1", ticket, "f.bin", step=step, every=0.2).start()
    try:
        with caplog.at_level(logging.INFO, logger="peer_app.lane"):
            assert reader.ended.wait(10), f"a reader at {step * 5} bytes/s still served after 10 s"
            wait_until(lambda: [r for r in caplog.records if "cut by this peer" in r.getMessage()], 3)
    finally:
        reader.stop()
    assert reader.status == OK and reader.received < 8 * MiB
    # the slot is back: the one transfer this peer takes at a time is ours again
    head = next(stub_for(address).Download(transfer_pb2.FileRequest(filename="f.bin", length=10), timeout=10))
    assert head.size == 32 * MiB


def test_a_lane_reader_killed_mid_send_gives_its_slot_back(serve, client, stub_for, caplog):
    caplog.set_level(logging.INFO, logger="peer_app.lane")  # before the cut: its line may come at once
    address, shared, _ = serve(max_concurrent_transfers=1)
    (shared / "f.bin").write_bytes(os.urandom(32 * MiB))
    ticket = client(address).open_lane("f.bin", 0, 0)
    with socket.create_connection(("127.0.0.1", ticket.port), timeout=5) as s:
        s.sendall(encode_hello(ticket.ticket, "f.bin", 0, ticket.length))
        assert read_reply(s)[0] == OK
        s.recv(64 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset, as a kill
    wait_until(lambda: [r for r in caplog.records if "cut by the client" in r.getMessage()], 5)

    def served() -> bool:  # the line is written just before the slot goes back: poll, do not race it
        try:
            head = next(stub_for(address).Download(transfer_pb2.FileRequest(filename="f.bin", length=10), timeout=10))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return False
            raise
        return head.size == 32 * MiB

    wait_until(served, 5, what="the cut reader's transfer slot back")


def test_a_stranger_flooding_the_lane_port_with_silent_connections_does_not_shut_members_out(serve, client):
    """Connections that never say hello, from one address, cannot fill the lane's connection table."""
    address, shared, servicer = serve()
    data = os.urandom(MiB)
    (shared / "f.bin").write_bytes(data)
    ticket = client(address).open_lane("f.bin", 0, len(data))
    flood = []
    try:
        for _ in range(100):  # more than the lane's whole table (2 x max_concurrent_transfers + 16)
            s = socket.socket()
            s.bind(("127.0.0.2", 0))  # the stranger's own address
            s.connect(("127.0.0.1", ticket.port))
            flood.append(s)
        assert receive(ticket, "f.bin") == data  # the member's lane, from 127.0.0.1, while the flood holds
    finally:
        for s in flood:
            s.close()


# -- downloads ---------------------------------------------------------------------------------------
def test_download_goes_over_the_lane_and_verifies_blake3(serve, dl, caplog):
    caplog.set_level(logging.INFO, logger="peer_app.lane")
    address, shared, _ = serve()
    data = os.urandom(5 * MiB + 3)
    (shared / "f.bin").write_bytes(data)
    result = download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], piece_size=MiB)
    assert (dl / "f.bin").read_bytes() == data
    assert result.verified == "blake3" and result.lane_bytes == {"p": len(data)} and result.sha256 == sha(data)
    assert leftovers(dl) == []
    # The peer's log has one line per lane send: the file, the amount and rate, whom to, which bytes.
    sends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lane f.bin: ")]
    spans = [re.search(r" to 127\.0\.0\.1 \(bytes (\d+)-(\d+)\)$", line) for line in sends]
    assert sends and all(spans), sends
    assert sum(int(m.group(2)) - int(m.group(1)) + 1 for m in spans if m) == len(data)


class InFlight:
    """Wraps client.lane.fetch: for each lane request, how many were in flight when it started (itself included)."""

    def __init__(self) -> None:
        self.now = 0
        self.starts: list[int] = []
        self.lock = threading.Lock()
        self.real: Callable[..., int] = lane.fetch

    def __call__(self, *args, **kwargs) -> int:
        with self.lock:
            self.now += 1
            self.starts.append(self.now)
        try:
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


def fetch_counting(serve, dl, monkeypatch, size: int) -> InFlight:
    address, shared, _ = serve()
    data = os.urandom(size)
    (shared / "f.bin").write_bytes(data)
    flight = InFlight()
    monkeypatch.setattr(lane, "fetch", flight)
    result = download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], piece_size=MiB)
    assert (dl / "f.bin").read_bytes() == data and result.lane_bytes == {"p": len(data)}
    return flight


def test_a_near_fast_holder_keeps_one_lane_request_in_flight(serve, dl, monkeypatch):
    # near and fast whatever the machine's load: the 15 ms and 100 MB/s marks are lane_depth's own test's
    monkeypatch.setattr(pace, "PIPELINE_LATENCY", 60.0)
    monkeypatch.setattr(pace, "FAST_RATE", 1.0)
    flight = fetch_counting(serve, dl, monkeypatch, 32 * MiB + 3)
    # Its first two requests start together (nothing is known of it yet); once its first byte came
    # quickly, each request starts alone: one receive loop into the file at a time.
    assert len(flight.starts) > 3 and flight.starts[2:] == [1] * (len(flight.starts) - 2), flight.starts


def test_a_holder_slow_to_answer_keeps_a_second_lane_request_in_flight(serve, dl, monkeypatch):
    monkeypatch.setattr(pace, "PIPELINE_LATENCY", 0.0)  # every request's set-up counts as slow
    flight = fetch_counting(serve, dl, monkeypatch, 32 * MiB + 3)
    assert 2 in flight.starts[2:], flight.starts  # the next request's set-up hidden behind the current one


def test_lane_depth_is_one_only_at_a_near_fast_holder():
    meter = pace.Meter()
    assert pace.lane_depth(meter, 2) == 2  # nothing measured yet
    meter.latency = pace.PIPELINE_LATENCY / 2
    assert pace.lane_depth(meter, 2) == 1  # near, rate not measured yet
    meter.rate = pace.FAST_RATE / 10
    assert pace.lane_depth(meter, 2) == 2  # near but slow: a second request keeps its share moving
    meter.rate = pace.FAST_RATE * 2
    assert pace.lane_depth(meter, 2) == 1 and pace.lane_depth(meter, 1) == 1
    meter.latency = pace.PIPELINE_LATENCY * 2
    assert pace.lane_depth(meter, 2) == 2  # far: the set-up is worth hiding


def test_lane_and_stream_sources_mix_in_one_download(serve, dl):
    data = os.urandom(8 * MiB)
    holders = []
    for name, ttl in (("lane", 10.0), ("stream", 0.0)):  # the second peer has its lane turned off
        address, shared, _ = serve(name, lane_ticket_seconds=ttl)
        (shared / "f.bin").write_bytes(data)
        holders.append({"name": name, "grpc_address": address, "blake3": b3(data)})
    result = download("f.bin", dl / "f.bin", holders, expected_sha256=sha(data), size=len(data), piece_size=256 * 1024)
    assert (dl / "f.bin").read_bytes() == data and result.verified == "blake3"
    assert set(result.sources) == {"lane", "stream"} and sum(result.sources.values()) == len(data)
    assert set(result.lane_bytes) == {"lane"} and "turned off" in result.lane_off["stream"]


def test_holders_that_disagree_on_blake3_refuse_the_lane(serve, dl):
    data = os.urandom(MiB)
    address, shared, _ = serve()
    (shared / "f.bin").write_bytes(data)
    holders = [
        {"name": "a", "grpc_address": address, "blake3": b3(data)},
        {"name": "b", "grpc_address": address, "blake3": b3(b"something else")},
    ]
    result = download("f.bin", dl / "f.bin", holders, expected_sha256=sha(data), size=len(data))
    assert (dl / "f.bin").read_bytes() == data
    assert result.verified == "sha256" and result.lane_bytes == {}
    assert "disagree" in result.lane_off["a"]


def test_a_corrupted_byte_on_the_lane_is_caught(serve, dl):
    """A holder whose index still names the old digests (bytes flipped since, unseen as yet): BLAKE3 catches it."""
    address, shared, servicer = serve()
    path = shared / "f.bin"
    data = os.urandom(2 * MiB)
    path.write_bytes(data)
    holder = [{"name": "p", "grpc_address": address}]
    download("f.bin", dl / "first.bin", holder)  # the digests are cached now
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(MiB + 5)
        fh.write(bytes([data[MiB + 5] ^ 1]))  # one bit, mtime put back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # the new ctime would give the flip away (the holder would withhold the file): the cache is made to miss it
    servicer.index.db.connect().execute("UPDATE file_hashes SET ctime_ns = ?", (path.stat().st_ctime_ns,))
    holder[0]["blake3"] = b3(data)
    with pytest.raises(DataLoss, match="blake3 mismatch"):
        download("f.bin", dl / "f.bin", holder, expected_sha256=sha(data), size=len(data))
    assert leftovers(dl) == [] and not (dl / "f.bin").exists()


def test_an_unreachable_lane_falls_back_to_the_stream(serve, dl):
    address, shared, servicer = serve()
    data = os.urandom(3 * MiB)
    (shared / "f.bin").write_bytes(data)
    listener = servicer.lane()
    listener.stop()  # tickets still name its port, but nothing listens there any more
    result = download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], piece_size=MiB)
    assert (dl / "f.bin").read_bytes() == data
    assert result.lane_bytes == {} and "unreachable" in result.lane_off["p"]
    assert result.verified == "blake3"  # the digest known from the holder still verifies the stream's bytes


def test_a_cut_lane_keeps_its_bytes_and_the_stream_goes_on_from_the_cut(serve, dl, monkeypatch):
    address, shared, _ = serve()
    data = os.urandom(6 * MiB)
    (shared / "f.bin").write_bytes(data)
    real = lane_server.LaneServer._sendfile

    def cut_after_2_5_mib(self, conn, fd, offset, length, moved, progress):
        real(self, conn, fd, offset, min(length, 5 * MiB // 2), moved, progress)  # then the connection closes

    monkeypatch.setattr(lane_server.LaneServer, "_sendfile", cut_after_2_5_mib)
    result = download(
        "f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], piece_size=MiB, streams_per_source=1
    )
    assert (dl / "f.bin").read_bytes() == data
    assert "cut" in result.lane_off["p"]
    assert 5 * MiB // 2 <= result.lane_bytes["p"] < len(data)  # whole requests, then one cut after 2.5 MiB
    assert result.sources["p"] == len(data) and result.duplicates == 0  # the stream went on where the lane was cut


def test_a_stalled_lane_drops_the_source_in_stall_timeout(serve, dl, monkeypatch):
    address, shared, _ = serve()
    (shared / "f.bin").write_bytes(os.urandom(2 * MiB))

    resume = threading.Event()

    def hang(self, conn, fd, offset, length, moved, progress):
        resume.wait(30)  # a sender that stops sending until the client has given up

    monkeypatch.setattr(lane_server.LaneServer, "_sendfile", hang)
    try:
        with pytest.raises(Exception, match="sent nothing for 0.5s"):  # its own watchdog, not the sender, ended it
            download(
                "f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], stall_timeout=0.5, streams_per_source=1
            )
    finally:
        resume.set()


def test_a_peer_that_does_not_know_open_lane_counts_as_one_without_a_lane():
    """An older peer answers OpenLane with UNIMPLEMENTED: the download treats it like a lane turned off."""

    class Unimplemented(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNIMPLEMENTED

        def details(self):
            return "Method not found!"

        def trailing_metadata(self):
            return ()

    assert isinstance(from_rpc_error(Unimplemented()), NoLane)


class RefuseOpenLane(CallInterceptor):
    """A peer whose access policy does not let this caller open lanes (but lets it read)."""

    @contextmanager
    def around(self, call: RpcCall, context):
        if call.method == "OpenLane":
            raise Unauthorized("a credential is needed for OpenLane")
        yield


def test_a_lane_refused_by_policy_leaves_the_stream_to_answer(peer_config, dl):
    data = os.urandom(MiB)
    (Path(peer_config.shared_dir) / "f.bin").write_bytes(data)
    server, port, servicer = create_server(peer_config, "127.0.0.1:0", interceptors=[RefuseOpenLane()])
    server.start()
    try:
        result = download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": f"127.0.0.1:{port}"}])
    finally:
        servicer.close()
        server.stop(None)
    assert (dl / "f.bin").read_bytes() == data
    assert result.lane_bytes == {} and "credential" in result.lane_off["p"]


def test_lanes_false_uses_only_the_stream(serve, dl):
    address, shared, _ = serve()
    data = os.urandom(MiB)
    (shared / "f.bin").write_bytes(data)
    result = download("f.bin", dl / "f.bin", [{"name": "p", "grpc_address": address}], lanes=False)
    assert (dl / "f.bin").read_bytes() == data
    assert result.verified == "sha256" and result.lane_bytes == {} and result.lane_off == {"p": "lanes turned off"}


def test_lane_bytes_are_counted_for_metrics(serve, client):
    address, shared, servicer = serve()
    (shared / "f.bin").write_bytes(b"q" * 4096)
    counted: list = []
    servicer.on_lane_bytes = counted.append
    receive(client(address).open_lane("f.bin", 0, 4096), "f.bin")
    wait_until(lambda: counted, what="the lane's bytes counted")  # the server thread counts after its last send
    assert counted == [4096]


def test_lane_listens_where_grpc_binds(serve, client):
    address, shared, servicer = serve()
    (shared / "f.bin").write_bytes(b"a")
    client(address).open_lane("f.bin", 0, 1)
    assert servicer.lane()._listener.getsockname()[0] == "127.0.0.1"


def test_spliced_blocks_land_in_the_file_and_bytes_left_out_are_dropped(serve, client, tmp_path):
    """With splice the blocks are PipedBlocks: a slice puts only its bytes into the file, the rest is dropped."""
    if not lane.SPLICE:
        pytest.skip("no os.splice on this system")
    address, shared, _ = serve()
    data = os.urandom(3 * MiB + 17)
    (shared / "f.bin").write_bytes(data)
    ticket = client(address).open_lane("f.bin", 0, 0)
    part = PartialFile(tmp_path / "f.bin", len(data), sha(data), MiB)
    kept: list[tuple[int, int]] = []

    def write(position: int, block) -> bool:
        assert isinstance(block, lane.PipedBlock)
        skip = len(block) // 3  # the first third is left out (as bytes another request wrote first)
        part.write(position + skip, block[skip:])
        kept.append((position + skip, position + len(block)))
        return True

    assert lane.fetch("127.0.0.1", ticket.port, ticket.ticket, "f.bin", 0, len(data), write, splice=True) == len(data)
    part.close()
    held = (tmp_path / part.path.name).read_bytes()
    assert kept and all(held[a:b] == data[a:b] for a, b in kept)
    gaps = [(end, start) for (_, end), (start, _) in zip(kept, kept[1:], strict=False)]
    assert all(held[a:b] == bytes(b - a) for a, b in gaps)  # left out: never written
