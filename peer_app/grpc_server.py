"""The peer's gRPC side: FileTransfer (real and ECO/DUMMY) plus the standard health service.

Start it as `python -m peer_app.grpc_server --config PATH` (or with P2P_CONFIG set).
The same process registers the peer at the Maestro, sends its heartbeats and runs the scrub.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import transfer_pb2, transfer_pb2_grpc
from common.config import NodeConfig, address, host_of, load_config
from common.errors import BadRequest, Busy, NoLane, TooLarge
from common.fields import check_sha256
from common.files import iter_chunks
from common.malloc import release_free_memory, tune_malloc
from common.names import check_name
from common.net import bind_problem
from common.rpc import CHANNEL_OPTIONS, FILE_TRANSFER, MAX_MESSAGE
from common.security import Guard
from common.tls import node_files
from peer_app.access import CredentialCheck
from peer_app.accounting import Accounting
from peer_app.admission import admission_control, keep_slot
from peer_app.agent import PresenceAgent
from peer_app.index import SharedIndex
from peer_app.interceptor import OneRequest, ThreadPools, current_call
from peer_app.lane import LaneServer, caller_host, file_state
from peer_app.pace import Watchdog, limits_of
from peer_app.rpc_errors import ErrorMapping
from peer_app.scrub import Scrub
from peer_app.space import Quotas
from peer_app.state import TransferTotals, known_peers, open_db
from peer_app.storage import AtomicFile, RateLimiter

log = logging.getLogger(__name__)

SERVER_OPTIONS = CHANNEL_OPTIONS + [
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]
_ZEROS = bytes(MAX_MESSAGE // 2)
SPARE_THREADS = 4  # transfer threads beyond the slots: refusals and the calls just ending
CONTROL_WORKERS = 8  # threads for health checks and reflection, apart from transfers
MAX_CHALLENGE = 128  # characters of a downloader's challenge this peer answers


class FileTransferServicer(transfer_pb2_grpc.FileTransferServicer):
    """Streams files out of and into one shared folder.

    Methods raise P2PError; the interceptor chain (create_server) turns it into the call's
    status and counts the bytes. A call reaches a method only once its caller passed the
    credential check and admission gave it a transfer slot (peer_app/admission.py), and is
    cut if its client keeps it waiting (peer_app/pace.py).
    """

    def __init__(
        self,
        config: NodeConfig,
        index: SharedIndex,
        on_upload=None,
        lane_host: str | None = None,
        guard: Guard | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.config = config
        self.guard = guard or Guard.of(config.security, config.name)  # to vouch for what it serves
        self.index = index
        self.folder = index.folder
        self.quotas = Quotas(index.folder, index.db, config.settings.member_quota_bytes)
        self.on_upload = on_upload or (lambda name: None)
        self._rate = RateLimiter(config.settings.max_transfer_rate)
        self._uploading: set[str] = set()
        self._lock = threading.Lock()
        # The fast lane listens where gRPC binds, on a port the OS picks when the first ticket is asked for.
        self.lane_host = config.host if lane_host is None else lane_host
        self.on_lane_bytes = lambda n: None  # the byte counter for /metrics (create_server sets it)
        self._lane: LaneServer | None = None
        self._lane_error = ""
        self._watchdog = watchdog  # the server's pace watchdog, which watches lane sends too

    def lane(self) -> LaneServer:
        """This peer's lane listener, started on first use; NoLane when the lane is off or cannot listen."""
        ttl = self.config.settings.lane_ticket_seconds
        if ttl <= 0:
            raise NoLane(f"peer {self.config.name} has its fast lane turned off; use the Download stream")
        # With TLS on (`security: tls`, docs/security.md), bytes travel only over the TLS stream: the lane is plain TCP.
        if getattr(getattr(self.config, "security", None), "tls", False):
            raise NoLane(f"peer {self.config.name} uses TLS, which its lane does not carry; use the Download stream")
        with self._lock:
            if self._lane is None and not self._lane_error:
                lane = LaneServer(
                    self.lane_host,
                    lambda name: self.folder.open(name)[0],
                    ttl=ttl,
                    limits=limits_of(self.config.settings),
                    block=self.config.settings.chunk_size,
                    watchdog=self._watchdog,
                    rate=self._rate if self.config.settings.max_transfer_rate > 0 else None,
                    max_connections=2 * self.config.settings.max_concurrent_transfers + 16,
                    on_sent=lambda n: self.on_lane_bytes(n),
                    port=self.config.lane_port,
                )
                try:
                    lane.start()
                    self._lane = lane
                except OSError as err:
                    where = address(self.lane_host, self.config.lane_port) if self.config.lane_port else self.lane_host
                    self._lane_error = f"cannot listen on {where}: {err.strerror or err}"
                    log.warning("fast lane off: %s", self._lane_error)
            if self._lane is None:
                raise NoLane(f"peer {self.config.name} has no fast lane ({self._lane_error}); use the Download stream")
            return self._lane

    def close(self) -> None:
        """Stop the lane listener (the gRPC server is stopped by its owner)."""
        with self._lock:
            lane, self._lane = self._lane, None
        if lane is not None:
            lane.stop()

    @contextmanager
    def _name_lock(self, name: str):
        with self._lock:
            if name in self._uploading:
                raise Busy(f"another upload of {name!r} is in progress")
            self._uploading.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._uploading.discard(name)

    def _chunk_size(self, request) -> int:
        size = request.chunk_size or self.config.settings.chunk_size
        return max(4096, min(size, MAX_MESSAGE // 2))

    def Download(self, request, context):
        """Stream [offset, offset+length) of a shared file; the first chunk names its size and sha256.

        The first chunk is sent even for an empty range, so a client always learns
        which content it is reading and can drop a holder whose file changed.
        """
        fh, st, name = self.folder.open(request.filename)
        with fh:
            yield from self._stream(request, fh, st, name)

    def _stream(self, request, fh, st: os.stat_result, name: str):
        info = self.index.lookup(name, st, fh)
        if request.offset > st.st_size:
            raise BadRequest(f"offset {request.offset} is past the end ({st.st_size} bytes)")
        offset = request.offset
        first: transfer_pb2.FileChunk | None = transfer_pb2.FileChunk(
            filename=name,
            sha256=info.sha256,
            blake3=info.blake3,
            size=info.size,
            offset=offset,
            **self._vouch(request.challenge, name, info),
        )
        for data in iter_chunks(fh, request.offset, request.length, self._chunk_size(request), size=st.st_size):
            self._rate.consume(len(data))
            if first is not None:
                first.data = data
                chunk, first = first, None
            else:
                chunk = transfer_pb2.FileChunk(data=data, offset=offset)
            offset += len(data)
            yield chunk
        if first is not None:
            yield first

    def OpenLane(self, request, context):
        """A one-time ticket for a range of a shared file over the fast lane (see peer_app/lane.py).

        The ticket keeps this call's transfer slot (admission's, counted against the caller's
        connection) until its bytes are sent, it is refused, or it expires; it is good only for
        this caller's address, this file as it is now, and this range.
        """
        lane = self.lane()
        release = keep_slot()
        try:
            fh, st, name = self.folder.open(request.filename)
            with fh:
                info = self.index.lookup(name, st, fh)
            if request.offset > st.st_size:
                raise BadRequest(f"offset {request.offset} is past the end ({st.st_size} bytes)")
            left = st.st_size - request.offset
            length = left if request.length == 0 else min(request.length, left)
            caller = caller_host(context.peer())
            # bound to the name as the caller spells it (its hello repeats it) and to this very file
            ticket = lane.grant(request.filename, request.offset, length, caller, file_state(st), release)
        except BaseException:
            release()
            raise
        return transfer_pb2.LaneTicket(
            port=lane.port,
            ticket=ticket,
            offset=request.offset,
            length=length,
            size=info.size,
            sha256=info.sha256,
            blake3=info.blake3,
            expires_in=lane.ttl,
            **self._vouch(request.challenge, name, info),
        )

    def _vouch(self, challenge: str, name: str, info) -> dict:
        """This peer's proof that it, a member, serves this content of name (docs/protocol.md); {} unasked."""
        if not challenge or len(challenge) > MAX_CHALLENGE:
            return {}
        proof = self.guard.holder_proof(self.config.name, name, info.size, info.sha256, info.blake3, challenge)
        return {"holder": self.config.name, "proof": proof} if proof else {}

    def Upload(self, request_iterator, context):
        """Store the streamed file under the first chunk's name once its size and sha256 match.

        A client that goes away mid-stream raises grpc.RpcError out of the request iterator:
        AtomicFile drops the temporary and nothing is kept.
        """
        settings = self.config.settings
        first = next(request_iterator, None)
        if first is None:
            raise BadRequest("empty upload: the first chunk must name the file")
        name = check_name(first.filename)
        check_sha256(first.sha256, "the upload's sha256")
        if first.size > settings.max_upload_bytes:
            raise TooLarge(f"{first.size} bytes is over this peer's limit of {settings.max_upload_bytes}")
        call = current_call()
        uploader = call.caller if call is not None else None  # the credential check's principal
        with self._name_lock(name), self.quotas.claim(uploader, name, first.size):
            with AtomicFile(
                self.folder,
                name,
                overwrite=first.overwrite,
                max_bytes=settings.max_upload_bytes,
                size=first.size,
                reserve=settings.disk_reserve_bytes,
            ) as out:
                self._rate.consume(len(first.data))
                out.write(first.data)
                for chunk in request_iterator:
                    self._rate.consume(len(chunk.data))
                    out.write(chunk.data)
                stored = out.commit(
                    first.sha256, first.size, before_place=lambda st: self.quotas.record(name, uploader, st.st_ino)
                )
            self.index.remember(name, out.sha256, stored, out.blake3)
        log.info("stored %s (%d bytes, sha256 %s)", name, out.size, out.sha256)
        self.on_upload(name)
        return transfer_pb2.UploadStatus(
            ok=True, message=f"stored {name}", filename=name, size=out.size, sha256=out.sha256
        )

    def DummyDownload(self, request, context):
        remaining = request.length
        if not remaining:
            info = self.index.get(check_name(request.filename)) if request.filename else None
            if info is None:
                raise BadRequest("DummyDownload needs a length or the name of a shared file")
            remaining = info.size
        chunk_size = self._chunk_size(request)
        view = memoryview(_ZEROS)
        while remaining > 0:
            n = min(chunk_size, remaining)
            self._rate.consume(n)
            yield transfer_pb2.FileChunk(data=view[:n].tobytes())
            remaining -= n

    def DummyUpload(self, request_iterator, context):
        received = sum(len(chunk.data) for chunk in request_iterator)
        return transfer_pb2.UploadStatus(ok=True, message=f"received {received} bytes and dropped them", size=received)


def create_server(
    config: NodeConfig,
    address: str | None = None,
    *,
    index: SharedIndex | None = None,
    on_upload=None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> tuple[grpc.Server, int, FileTransferServicer]:
    """Build (not start) the gRPC server; return it, its bound port and the servicer.

    Every call passes this chain of interceptors, outermost first:

    1. ThreadPools: transfer calls run on grpc_workers threads (kept above the slot count, so a
       refusal never waits for a thread); health and reflection on a pool of their own, so
       they are answered whatever the transfers do. grpc reads the pool of the outermost link.
    2. Accounting: bytes in and out, a log line per call, /metrics totals; outside the others,
       so it sees every call end, however it ended, once they have said how.
    3. ErrorMapping: a P2PError raised by anything inside (a refusal, the servicer) becomes the
       call's status, its name in the trailing metadata.
    4. CredentialCheck: a stranger is refused before it takes a slot or is read from.
    5. AdmissionControl: a transfer slot or Busy at once; then the pace watchdog.
    6. the given interceptors (tests add theirs here);
    7. OneRequest (innermost): a one-request method reads its request from a stream, so all
       the links above decide before a single message is read.
    """
    if index is None:
        index = SharedIndex.for_node(config, open_db(config.db_path))
    settings = config.settings
    totals = TransferTotals(index.db)
    guard = Guard.of(config.security, config.name)
    checks = CredentialCheck(guard, ("127.0.0.1", "::1", config.bind, config.host))
    watchdog = Watchdog(on_quiet=release_free_memory)
    transfer_pool = futures.ThreadPoolExecutor(
        max_workers=max(settings.grpc_workers, settings.max_concurrent_transfers + SPARE_THREADS),
        thread_name_prefix="grpc",
    )
    control_pool = futures.ThreadPoolExecutor(max_workers=CONTROL_WORKERS, thread_name_prefix="grpc-control")
    chain = [
        ThreadPools(lambda service: None if service == FILE_TRANSFER else control_pool),
        Accounting(totals),
        ErrorMapping(),
        checks,
        admission_control(config, watchdog),
        *interceptors,
        OneRequest(),
    ]
    server = grpc.server(transfer_pool, interceptors=chain, options=SERVER_OPTIONS)
    address = address or config.grpc_bind
    servicer = FileTransferServicer(
        config, index, on_upload, lane_host=host_of(address), guard=guard, watchdog=watchdog
    )
    servicer.on_lane_bytes = lambda n: totals.add("Lane", n)
    transfer_pb2_grpc.add_FileTransferServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    for service in ("", FILE_TRANSFER):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Server reflection: grpcurl and other generic tools list and call the services without the .proto.
    services = [
        transfer_pb2.DESCRIPTOR.services_by_name["FileTransfer"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server)
    try:
        port = _bind(server, address, config)
    except RuntimeError:  # grpcio raises on a failed bind; older versions return 0
        port = 0
    if port == 0:
        reason = bind_problem(config.bind or config.host, config.grpc_port) or "address in use or not local"
        raise SystemExit(f"error: cannot bind gRPC on {address}: {reason}")
    checks.port = port
    return server, port, servicer


def _bind(server: grpc.Server, address: str, config: NodeConfig) -> int:
    """Listen on address: with TLS, using the node's certificate from the run folder."""
    if not config.security.tls:
        return server.add_insecure_port(address)
    files = node_files(config.security.tls_dir, config.name)
    credentials = grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())])
    return server.add_secure_port(address, credentials)


def serve(config: NodeConfig) -> None:
    """Run the gRPC server and the presence agent until SIGTERM/SIGINT."""
    tune_malloc()
    db = open_db(config.db_path)
    index = SharedIndex.for_node(config, db)
    removed = index.folder.remove_stale_temporaries()
    if removed:
        log.info("removed %d temporary files left by an earlier run", removed)
    known = known_peers(db, config)
    agent = PresenceAgent(config, index, known)
    server, port, servicer = create_server(config, index=index, on_upload=lambda name: agent.register_now())
    server.start()
    log.info("%s gRPC listening on %s (advertised as %s)", config.name, config.grpc_bind, config.grpc_address)
    agent.start()
    if config.settings.scrub_rate > 0:  # bytes that changed unseen: withheld or re-advertised (peer_app/scrub.py)
        Scrub(index, config.settings.scrub_rate, on_change=lambda check: agent.register_now(), stop=agent.stop).start()
    done = threading.Event()

    def _stop(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    agent.stop.set()
    servicer.close()
    server.stop(grace=2).wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peer_app.grpc_server", description=__doc__)
    parser.add_argument("--config", help="node config JSON (default: $P2P_CONFIG)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(load_config(args.config))


if __name__ == "__main__":
    main()
