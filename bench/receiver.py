"""What a verified receiver can reach: raw TCP against the same path with a hash in it.

    python -m bench.receiver [--size-mib 512] [--runs 3] [--quick]

The sender is a separate process that serves a file with `os.sendfile`. Each
receiver (its own process, so its peak RSS is its own) reads the socket with
`recv_into` into reused buffers and `pwrite`s them into a file, and verifies
the bytes one way or another:

- raw: no hash (the baseline every other row is divided by);
- sha256 / BLAKE3 inline: the receive thread hashes each buffer after writing it;
- sha256 / BLAKE3 in a thread: buffers go to a second thread through a small pool;
- BLAKE3 read back: a second thread reads the written file back (page cache) in
  order and hashes it, the way a multi-source download verifies (pieces land
  in any order, the digest needs them in order).

Kinds are interleaved run by run, so a load change hits all of them alike; the
table gives medians, the best run in brackets, and the ratio of medians to raw.
It uses no p2pnet code on purpose (stdlib + blake3): it measures the machine, not p2pnet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.procs import peak_rss_kib

MiB = 1024 * 1024
BUFFER = 1 * MiB
KINDS = [
    "raw",
    "sha256-inline",
    "sha256-thread",
    "blake3-inline",
    "blake3-thread",
    "blake3-readback",
    "blake3-mmap",
]
LABELS = {
    "raw": "raw, no hash",
    "sha256-inline": "+ sha256 inline",
    "sha256-thread": "+ sha256 in a second thread",
    "blake3-inline": "+ BLAKE3 inline",
    "blake3-thread": "+ BLAKE3 in a second thread",
    "blake3-readback": "+ BLAKE3 read back in order (thread)",
    "blake3-mmap": "+ BLAKE3 of the file mapped, in order (thread)",
}


def _hasher(kind: str):
    if kind.startswith("sha256"):
        return hashlib.sha256()
    import blake3

    return blake3.blake3()


# -- child processes ------------------------------------------------------------------------------
def serve(path: str) -> None:
    """Send the whole file to each connection with os.sendfile, one connection at a time."""
    size = os.path.getsize(path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        print(listener.getsockname()[1], flush=True)
        while True:
            conn, _ = listener.accept()
            with conn, open(path, "rb") as fh:
                offset = 0
                while offset < size:
                    sent = os.sendfile(conn.fileno(), fh.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent


def _receive(conn: socket.socket, fd: int, on_buffer=None) -> int:
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    offset = 0
    while n := conn.recv_into(buf):
        os.pwrite(fd, view[:n], offset)
        offset += n
        if on_buffer is not None:
            on_buffer(view[:n])
    return offset


def _receive_pooled(conn: socket.socket, fd: int, digest) -> int:
    """Receive on this thread, hash on another: buffers circulate through a pool of four."""
    free: queue.Queue = queue.Queue()
    full: queue.Queue = queue.Queue()
    for _ in range(4):
        free.put(bytearray(BUFFER))

    def hash_loop() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            digest.update(memoryview(buf)[:n])
            free.put(buf)

    worker = threading.Thread(target=hash_loop)
    worker.start()
    offset = 0
    try:
        while True:
            buf = free.get()
            n = conn.recv_into(buf)
            if not n:
                break
            os.pwrite(fd, memoryview(buf)[:n], offset)
            offset += n
            full.put((buf, n))
    finally:
        full.put(None)
        worker.join()
    return offset


def _receive_readback(conn: socket.socket, fd: int, digest, mapped: bool = False) -> int:
    """Receive and pwrite on this thread; another thread reads the written prefix back and hashes it.

    mapped: the other thread hashes the written prefix through mmap instead of
    copying it into a buffer first.
    """
    written = 0
    cond = threading.Condition()
    finished = False

    def hash_loop() -> None:
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        hashed = 0
        while True:
            with cond:
                while written - hashed < len(buf) and not finished:
                    cond.wait()
                available = written - hashed
                if available == 0 and finished:
                    return
            n = min(len(buf), available)
            if mapped:
                with mmap.mmap(fd, n, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ, offset=hashed) as m:
                    digest.update(m)
            else:
                n = os.preadv(fd, [view[:n]], hashed)
                digest.update(view[:n])
            hashed += n

    worker = threading.Thread(target=hash_loop)
    worker.start()
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    try:
        while n := conn.recv_into(buf):
            os.pwrite(fd, view[:n], written)
            with cond:
                written += n
                if written % (4 * MiB) < n:
                    cond.notify()
    finally:
        with cond:
            finished = True
            cond.notify()
        worker.join()
    return written


def fetch(kind: str, port: int, out: str) -> dict:
    digest = None if kind == "raw" else _hasher(kind)
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            if digest is None:
                received = _receive(conn, fd)
            elif kind.endswith("-inline"):
                received = _receive(conn, fd, digest.update)
            elif kind.endswith("-thread"):
                received = _receive_pooled(conn, fd, digest)
            else:
                received = _receive_readback(conn, fd, digest, mapped=kind.endswith("-mmap"))
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    return {
        "kind": kind,
        "seconds": seconds,
        "bytes": received,
        "digest": digest.hexdigest() if digest is not None else "",
        "rss_kib": peak_rss_kib(),
    }


def hash_speed(kind: str, size: int = 256 * MiB) -> float:
    """Single-thread hash rate in MB/s over an in-memory buffer (what the hash alone costs)."""
    data = memoryview(os.urandom(64 * MiB))
    digest = _hasher(kind)
    started = time.perf_counter()
    for _ in range(size // len(data)):
        digest.update(data)
    return size / (time.perf_counter() - started) / 1e6


# -- the benchmark ------------------------------------------------------------------------------
def _child(*args: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parent.parent
    args_ = [sys.executable, "-m", "bench.receiver", *args]
    return subprocess.Popen(args_, cwd=root, stdout=subprocess.PIPE, text=True)


def bench(size: int, runs: int, kinds: list[str], tmp: Path) -> dict:
    source = tmp / "source.bin"
    with open(source, "wb") as fh:
        for offset in range(0, size, 8 * MiB):
            fh.write(os.urandom(min(8 * MiB, size - offset)))
    expected = {}
    for kind in ("sha256", "blake3"):
        if any(k.startswith(kind) for k in kinds):
            digest = _hasher(kind)
            with open(source, "rb") as fh:
                while block := fh.read(8 * MiB):
                    digest.update(block)
            expected[kind] = digest.hexdigest()
    server = _child("_serve", str(source))
    try:
        assert server.stdout is not None  # _child pipes it
        port = int(server.stdout.readline())
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        target = tmp / "received.bin"
        for _ in range(runs):
            for kind in kinds:
                target.unlink(missing_ok=True)
                os.sync()
                proc = _child("_fetch", kind, str(port), str(target))
                out, _ = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    raise SystemExit(f"receiver {kind} failed with exit {proc.returncode}")
                report = json.loads(out.strip().splitlines()[-1])
                if report["bytes"] != size:
                    raise SystemExit(f"receiver {kind} got {report['bytes']} of {size} bytes")
                if kind != "raw" and report["digest"] != expected[kind.split("-")[0]]:
                    raise SystemExit(f"receiver {kind} computed a wrong digest")
                results[kind].append(report)
        target.unlink(missing_ok=True)
    finally:
        server.terminate()
        server.wait(10)
    return {"size": size, "runs": runs, "results": results}


def report(data: dict, speeds: dict[str, float]) -> str:
    size = data["size"]
    results = data["results"]

    def mbps(kind: str, pick=statistics.median) -> float:
        return size / pick([r["seconds"] for r in results[kind]]) / 1e6

    raw = mbps("raw")
    lines = [
        f"file {size / MiB:.0f} MiB over loopback, os.sendfile -> recv_into + pwrite ({BUFFER // MiB} MiB buffer), "
        f"median of {data['runs']} [best], {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}",
        f"  {'receiver':46s} {'MB/s':>7s} {'[best]':>8s} {'x raw':>6s} {'RSS MiB':>8s}",
    ]
    for kind in results:
        rss = max(r["rss_kib"] for r in results[kind]) / 1024
        lines.append(
            f"  {LABELS[kind]:46s} {mbps(kind):7.0f} [{mbps(kind, min):6.0f}] {mbps(kind) / raw:6.2f} {rss:8.1f}"
        )
    lines.append("  hash alone, one thread, in memory: " + ", ".join(f"{k} {v:,.0f} MB/s" for k, v in speeds.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        serve(argv[1])
        return
    if argv and argv[0] == "_fetch":
        print(json.dumps(fetch(argv[1], int(argv[2]), argv[3])), flush=True)
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512, help="file size (default 512)")
    parser.add_argument("--runs", type=int, default=None, help="runs per kind (default 3)")
    parser.add_argument("--quick", action="store_true", help="64 MiB, one run")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if "raw" not in kinds:
        kinds.insert(0, "raw")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    size = (64 if args.quick else args.size_mib) * MiB
    runs = args.runs or (1 if args.quick else 3)
    speeds = {"sha256": hash_speed("sha256"), "BLAKE3": hash_speed("blake3")}
    with tempfile.TemporaryDirectory(prefix="p2p-receiver-") as tmp:
        data = bench(size, runs, kinds, Path(tmp))
    print(report(data, speeds))
    if args.json:
        print(json.dumps(data))


if __name__ == "__main__":
    main()
