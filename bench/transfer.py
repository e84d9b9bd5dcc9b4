"""Download speed on loopback: p2pnet's gRPC download against raw TCP, one and two sources.

    python -m bench.transfer [--size-mib 512] [--quick] [--runs N]

Everything runs as separate processes on 127.0.0.1: the real peer gRPC server
(`python -m peer_app.grpc_server`, one or two of them sharing the file), a
client process per download using the project's download library (ranged
streams, pwrite, sha256 verified, renamed into place), and a raw TCP baseline
(server `socket.sendfile`, client `recv_into` + write to disk, no hashing).
Prints MB/s, the ratio to raw TCP, and the peak RSS of clients and servers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.config import NodeConfig, Settings, write_config
from control.generate import free_ports
from control.processes import PROJECT_ROOT

FILE_NAME = "bench.bin"
MiB = 1024 * 1024


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a live process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _make_file(path: Path, size: int) -> None:
    block = 8 * MiB
    with open(path, "wb") as fh:
        for offset in range(0, size, block):
            fh.write(os.urandom(min(block, size - offset)))


def _python(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.transfer", *args], cwd=PROJECT_ROOT, **kwargs)


# -- child processes ------------------------------------------------------------------------------
def raw_serve(path: str) -> None:
    """Serve path to every connection with sendfile (the baseline's server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        print(listener.getsockname()[1], flush=True)
        while True:
            conn, _ = listener.accept()
            with conn, open(path, "rb") as fh:
                conn.sendfile(fh)


def raw_fetch(port: int, out: str) -> dict:
    """Receive until EOF with recv_into, writing to out (the baseline's client)."""
    started = time.perf_counter()
    buf = bytearray(MiB)
    view = memoryview(buf)
    received = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := conn.recv_into(buf):
                os.write(fd, view[:n])
                received += n
        finally:
            os.close(fd)
    return {"seconds": time.perf_counter() - started, "bytes": received}


def grpc_fetch(out: str, sha256: str, size: int, addresses: list[str]) -> dict:
    """Download with the project's library from the given gRPC addresses."""
    from client.download import download
    from common.malloc import tune_malloc

    tune_malloc()
    started = time.perf_counter()
    holders = [{"name": f"peer{i + 1}", "grpc_address": a} for i, a in enumerate(addresses)]
    result = download(FILE_NAME, out, holders, expected_sha256=sha256, size=size)
    return {"seconds": time.perf_counter() - started, "bytes": result.size, "sources": result.sources}


def child(argv: list[str]) -> None:
    role = argv[0]
    if role == "_raw-serve":
        raw_serve(argv[1])
        return
    if role == "_raw-fetch":
        report = raw_fetch(int(argv[1]), argv[2])
    else:
        report = grpc_fetch(argv[1], argv[2], int(argv[3]), argv[4:])
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
    report["rss_kib"] = _vm_hwm_kib(os.getpid())
    print(json.dumps(report), flush=True)


# -- the benchmark ------------------------------------------------------------------------------
def _peer_config(tmp: Path, name: str, shared: Path) -> Path:
    port = free_ports(1)[0]
    config = NodeConfig(
        role="peer",
        name=name,
        host="127.0.0.1",
        rest_port=free_ports(1)[0],
        grpc_port=port,
        shared_dir=str(shared),
        run_dir=str(tmp / "run" / name),
        maestro_url="http://127.0.0.1:1",  # no Maestro: registration fails fast, quietly retried
        settings=Settings(heartbeat_interval=60.0),
    )
    path = tmp / "run" / f"{name}.json"
    write_config(config, path)
    return path


def _run_child(args: list[str]) -> dict:
    proc = _python(*args, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark client {args[0]} failed with exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _clean(out: Path) -> None:
    for entry in out.iterdir():
        entry.unlink()
    os.sync()  # start every run without the last one's dirty pages in flight


def bench(size: int, runs: int, tmp: Path) -> dict:
    from client.transfer import TransferClient
    from common.files import sha256_file

    shared, out = tmp / "shared", tmp / "out"
    shared.mkdir()
    out.mkdir()
    source = shared / FILE_NAME
    _make_file(source, size)
    sha256 = sha256_file(source)
    servers = []
    try:
        raw = _python("_raw-serve", str(source), stdout=subprocess.PIPE, text=True)
        servers.append(raw)
        raw_port = int(raw.stdout.readline())
        peers = []
        for name in ("peer1", "peer2"):
            config = _peer_config(tmp, name, shared)
            log = open(tmp / "run" / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(
                [sys.executable, "-m", "peer_app.grpc_server", "--config", str(config)],
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            servers.append(proc)
            address = json.loads(config.read_text())
            peers.append((proc, f"127.0.0.1:{address['grpc_port']}"))
        for _, address in peers:  # connected, and the file hashed into the peer's index
            with TransferClient(address, connect_timeout=30.0) as t:
                t.stat(FILE_NAME)
        target = str(out / FILE_NAME)
        results: dict[str, list[dict]] = {"raw": [], "grpc1": [], "grpc2": []}
        for _ in range(runs):
            _clean(out)
            results["raw"].append(_run_child(["_raw-fetch", str(raw_port), target]))
            _clean(out)
            results["grpc1"].append(_run_child(["_fetch", target, sha256, str(size), peers[0][1]]))
            _clean(out)
            results["grpc2"].append(_run_child(["_fetch", target, sha256, str(size), peers[0][1], peers[1][1]]))
        rss = {
            "raw_server": _vm_hwm_kib(raw.pid),
            "grpc_server1": _vm_hwm_kib(peers[0][0].pid),
            "grpc_server2": _vm_hwm_kib(peers[1][0].pid),
        }
        _clean(out)
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"size": size, "runs": runs, "results": results, "server_rss_kib": rss}


def report(data: dict) -> str:
    """The figures as a small table: median MB/s (best run in brackets), peak RSS, ratios of medians."""
    size = data["size"]

    def mbps(kind: str, pick=statistics.median) -> float:
        return size / pick([r["seconds"] for r in data["results"][kind]]) / 1e6

    def rss(kind: str) -> float:
        return max(r["rss_kib"] for r in data["results"][kind]) / 1024

    srv = {k: v / 1024 for k, v in data["server_rss_kib"].items()}
    rows = [
        ("raw TCP (sendfile -> recv_into + write)", "raw", srv["raw_server"]),
        ("p2pnet gRPC, 1 source, sha256 verified", "grpc1", srv["grpc_server1"]),
        ("p2pnet gRPC, 2 sources, sha256 verified", "grpc2", max(srv["grpc_server1"], srv["grpc_server2"])),
    ]
    lines = [f"file {size / MiB:.0f} MiB, median of {data['runs']} run(s) [best], loopback, {os.cpu_count()} CPU(s)"]
    for label, kind, server in rows:
        lines.append(
            f"  {label:42s} {mbps(kind):7.0f} MB/s [{mbps(kind, min):5.0f}]"
            f"   client RSS {rss(kind):6.1f} MiB   server RSS {server:6.1f} MiB"
        )
    raw, one, two = mbps("raw"), mbps("grpc1"), mbps("grpc2")
    lines.append(
        f"  ratio 1 source / raw TCP: {one / raw:.2f} [best {mbps('grpc1', min) / mbps('raw', min):.2f}]"
        f"    2 sources / 1 source: {two / one:.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        child(argv)
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.transfer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512, help="file size (default 512)")
    parser.add_argument("--quick", action="store_true", help="64 MiB, one run: a smoke test for CI")
    parser.add_argument("--runs", type=int, default=None, help="runs per kind; the median counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    size = (64 if args.quick else args.size_mib) * MiB
    runs = args.runs or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        data = bench(size, runs, Path(tmp))
    print(report(data))
    if args.json:
        print(json.dumps(data))


if __name__ == "__main__":
    main()
