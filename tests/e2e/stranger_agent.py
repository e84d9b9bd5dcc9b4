"""The stranger's hands: one process inside the stranger's network namespace.

Started by tests/e2e/stranger.py as `ip netns exec NS python -m tests.e2e.stranger_agent`.
It reads one JSON command per line on stdin and writes one JSON answer per line on stdout,
so a test makes many calls from a non-loopback source address without paying a Python
start-up each time. Everything it does is what an outsider can do with the wire protocols
alone: plain HTTP, the public .proto, and listeners of its own (a fake peer, a fake gRPC
file server). It knows no secret unless a command hands one over.

Commands (field "op"):
  http         {method, url, json?, params?, headers?, timeout?} -> {status, body} | {error}
  upload       {address, name, data_hex | size, overwrite?, sha256?, metadata?} -> {code, details, ...}
  dummy_upload {address, size, metadata?}                     -> {code, details, size?}
  download     {address, name, metadata?}                     -> {code, details, size?, sha256?}
  serve_http   {host, port, routes: {path: json answer}, default?: json}  -> {url}
  hits         {port?}                                       -> {hits: ["PORT GET /search?...", ...]}
  serve_grpc   {host, port, data_hex}                        -> {address}   (Download serves data)
  quit         {}
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import requests

from common import transfer_pb2, transfer_pb2_grpc

_hits: list[str] = []
_hits_lock = threading.Lock()
_servers: list = []


def _code(err: grpc.RpcError) -> dict:
    return {"code": err.code().name, "details": err.details() or ""}


def _metadata(cmd: dict) -> list[tuple[str, str]] | None:
    return [tuple(pair) for pair in cmd.get("metadata", [])] or None


def op_http(cmd: dict) -> dict:
    try:
        resp = requests.request(
            cmd.get("method", "GET"),
            cmd["url"],
            json=cmd.get("json"),
            params=cmd.get("params"),
            headers=cmd.get("headers"),
            timeout=cmd.get("timeout", 5.0),
            verify=cmd.get("verify", True),
        )
    except requests.RequestException as err:
        return {"error": type(err).__name__, "detail": str(err)[:300]}
    try:
        body = resp.json()
    except ValueError:
        body = resp.text[:2000]
    return {"status": resp.status_code, "body": body}


def op_upload(cmd: dict) -> dict:
    data = bytes.fromhex(cmd["data_hex"]) if "data_hex" in cmd else bytes(cmd.get("size", 0))
    sha = cmd.get("sha256", hashlib.sha256(data).hexdigest())

    def chunks():
        yield transfer_pb2.FileChunk(
            data=data, filename=cmd["name"], size=len(data), sha256=sha, overwrite=bool(cmd.get("overwrite"))
        )

    with grpc.insecure_channel(cmd["address"]) as channel:
        try:
            status = transfer_pb2_grpc.FileTransferStub(channel).Upload(
                chunks(), timeout=cmd.get("timeout", 10.0), metadata=_metadata(cmd)
            )
        except grpc.RpcError as err:
            return _code(err)
    return {"code": "OK", "details": status.message, "size": status.size, "sha256": status.sha256}


def op_dummy_upload(cmd: dict) -> dict:
    def chunks():
        yield transfer_pb2.FileChunk(data=bytes(cmd.get("size", 1024)))

    with grpc.insecure_channel(cmd["address"]) as channel:
        try:
            status = transfer_pb2_grpc.FileTransferStub(channel).DummyUpload(
                chunks(), timeout=cmd.get("timeout", 10.0), metadata=_metadata(cmd)
            )
        except grpc.RpcError as err:
            return _code(err)
    return {"code": "OK", "details": status.message, "size": status.size}


def op_download(cmd: dict) -> dict:
    digest, size, first_sha = hashlib.sha256(), 0, ""
    with grpc.insecure_channel(cmd["address"]) as channel:
        try:
            for chunk in transfer_pb2_grpc.FileTransferStub(channel).Download(
                transfer_pb2.FileRequest(filename=cmd["name"]),
                timeout=cmd.get("timeout", 10.0),
                metadata=_metadata(cmd),
            ):
                first_sha = first_sha or chunk.sha256
                digest.update(chunk.data)
                size += len(chunk.data)
        except grpc.RpcError as err:
            return _code(err)
    return {"code": "OK", "details": "", "size": size, "sha256": digest.hexdigest(), "announced": first_sha}


def op_serve_http(cmd: dict) -> dict:
    routes: dict = cmd.get("routes", {})
    default = cmd.get("default", {"status": "ok"})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with _hits_lock:
                _hits.append(f"{self.server.server_address[1]} {self.command} {self.path}")  # type: ignore[index]  # an AF_INET server: (host, port)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            body = json.dumps(routes.get(self.path.split("?", 1)[0], default)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((cmd["host"], cmd["port"]), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _servers.append(server)
    return {"url": f"http://{cmd['host']}:{server.server_address[1]}"}


def op_hits(cmd: dict) -> dict:
    port = cmd.get("port")
    with _hits_lock:
        return {"hits": [h for h in _hits if port is None or h.startswith(f"{port} ")]}


class _FakeFiles(transfer_pb2_grpc.FileTransferServicer):
    """Serves the same bytes for any name, announcing their true sha256."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha = hashlib.sha256(data).hexdigest()

    def Download(self, request, context):
        data = self.data[request.offset :]
        if request.length:
            data = data[: request.length]
        yield transfer_pb2.FileChunk(
            data=data, filename=request.filename, size=len(self.data), sha256=self.sha, offset=request.offset
        )


def op_serve_grpc(cmd: dict) -> dict:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    transfer_pb2_grpc.add_FileTransferServicer_to_server(_FakeFiles(bytes.fromhex(cmd["data_hex"])), server)
    checker = health.HealthServicer()
    for service in ("", "p2pnet.FileTransfer"):
        checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port(f"{cmd['host']}:{cmd['port']}")
    server.start()
    _servers.append(server)
    return {"address": f"{cmd['host']}:{port}"}


OPS = {
    "http": op_http,
    "upload": op_upload,
    "dummy_upload": op_dummy_upload,
    "download": op_download,
    "serve_http": op_serve_http,
    "hits": op_hits,
    "serve_grpc": op_serve_grpc,
}


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            break
        try:
            answer = OPS[cmd["op"]](cmd)
        except Exception as err:  # noqa: BLE001 - the harness shows any failure as an answer
            answer = {"error": type(err).__name__, "detail": str(err)[:300]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
