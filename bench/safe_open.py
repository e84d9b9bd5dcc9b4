"""What the safe open of a shared file costs per Download call, against the plain open it replaced.

    python -m bench.safe_open [--calls 20000] [--quick]

Both sides do what a Download does before its first byte, on the same small file, in one process,
alternating in rounds so machine load hits both alike:

- plain (the code before the safe open): resolve the folder, check the name is no symlink leading out
  (Path.resolve, is_symlink, exists), open() the path, check it is a regular file (isfile), fstat;
- safe (peer_app.storage.SharedFolder.open): open the folder, openat the name with O_NOFOLLOW,
  fstat, check a regular file with one link and fields within bounds, close the folder.

Prints microseconds per call for each and their ratio; then the same for a whole Download RPC
(in-process gRPC server on port 0, a 4 KiB file): calls per second. Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from common import transfer_pb2, transfer_pb2_grpc
from common.config import NodeConfig, Settings
from common.names import check_name
from peer_app.grpc_server import create_server
from peer_app.storage import SharedFolder

NAME = "bench-small.bin"


def plain_open(folder: Path, name: str):
    """The open path before the safe open (common.names.resolve_in + storage.open_shared), for comparison."""
    check_name(name)
    base = folder.resolve()
    path = base / name
    if path.is_symlink() or path.exists():
        real = path.resolve()
        if real.parent != base and base not in real.parents:
            raise PermissionError(name)
    fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
    if not os.path.isfile(path):
        fh.close()
        raise FileNotFoundError(name)
    os.fstat(fh.fileno())
    return fh


def safe_open(folder: SharedFolder, name: str):
    fh, _, _ = folder.open(name)
    return fh


def per_call_us(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn().close()
    return (time.perf_counter() - started) / calls * 1e6


def bench_open(shared: Path, calls: int, rounds: int) -> dict:
    folder = SharedFolder(shared)
    plain, safe = [], []
    for _ in range(rounds):
        plain.append(per_call_us(lambda: plain_open(shared, NAME), calls))
        safe.append(per_call_us(lambda: safe_open(folder, NAME), calls))
    p, s = statistics.median(plain), statistics.median(safe)
    return {"plain_open_us": round(p, 2), "safe_open_us": round(s, 2), "ratio_safe_to_plain": round(s / p, 2)}


def bench_download_calls(shared: Path, tmp: Path, calls: int) -> dict:
    config = NodeConfig(role="peer", name="bench", host="127.0.0.1", rest_port=1, grpc_port=1,
                        shared_dir=str(shared), run_dir=str(tmp / "run"), settings=Settings())  # fmt: skip
    server, port, _ = create_server(config, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = transfer_pb2_grpc.FileTransferStub(channel)
            request = transfer_pb2.FileRequest(filename=NAME)
            for _ in range(50):  # warm-up: connection, hash cache
                list(stub.Download(request, timeout=10))
            started = time.perf_counter()
            for _ in range(calls):
                list(stub.Download(request, timeout=10))
            elapsed = time.perf_counter() - started
    finally:
        server.stop(None)
    return {"download_calls_per_s": round(calls / elapsed), "download_call_us": round(elapsed / calls * 1e6)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="fewer calls (CI)")
    args = parser.parse_args(argv)
    calls, rounds, rpc_calls = (2000, 3, 300) if args.quick else (args.calls, 5, 3000)
    with tempfile.TemporaryDirectory(prefix="p2p-bench-open-") as raw:
        tmp = Path(raw)
        shared = tmp / "shared"
        shared.mkdir()
        (shared / NAME).write_bytes(os.urandom(4096))
        result = {"calls": calls, "rounds": rounds, "loadavg": os.getloadavg()[0]}
        result.update(bench_open(shared, calls, rounds))
        result.update(bench_download_calls(shared, tmp, rpc_calls))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
