"""Replays of the security review's "unbounded input", "swap races and links" and "socket squatting" findings.

Each attack is a function run against real processes (a Maestro and one peer, started
with tests.support on free ports) that returns what an outsider got: status codes, bytes,
files written, memory grown, outside bytes leaked. The e2e tests assert on these; run
the module to print every figure (the closing note's before/after table):

    python -m tests.e2e.attacks_bounds [--swap-tries 2000] [--body-mib 100]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests

from common import transfer_pb2, transfer_pb2_grpc
from common.config import Settings
from control.private import RUNTIME_ENV
from tests.support import ROOT, Node, node_configs, write_nodes

SECRET = b"OUTSIDE-SECRET-" * 64
INSIDE = b"inside-bytes-" * 64
EMOJI_252 = "\U0001f600" * 63  # 63 four-byte characters: 252 bytes of UTF-8
NFC_NAME = unicodedata.normalize("NFC", "caf\u00e9.txt")
NFD_NAME = unicodedata.normalize("NFD", "caf\u00e9.txt")
RTLO_NAME = "invoice\u202etxt.exe"
C1_NAME = "bell\u0085name.txt"
ZWJ_NAME = "zw\u200dj.txt"


@dataclass
class Net:
    """A running Maestro and peer, plus the folders an attacker aims at."""

    maestro: Node
    peer: Node
    tmp: Path

    @property
    def shared(self) -> Path:
        return Path(self.peer.config.shared_dir)

    @property
    def outside(self) -> Path:
        return self.tmp / "outside"

    def stub(self) -> transfer_pb2_grpc.FileTransferStub:
        channel = grpc.insecure_channel(self.peer.config.grpc_address)
        return transfer_pb2_grpc.FileTransferStub(channel)


def start_net(tmp: Path, settings: Settings | None = None) -> Net:
    """A Maestro (one gunicorn worker, so its memory is one process) and peer1, healthy."""
    settings = settings or Settings(heartbeat_interval=0.5, request_timeout=1.0, rest_workers=1)
    configs = node_configs(tmp, ["peer1"], settings)
    (tmp / "outside").mkdir(exist_ok=True)
    (tmp / "outside" / "secret.txt").write_bytes(SECRET)
    nodes = write_nodes(tmp, configs)
    for node in nodes.values():
        node.start()
    for node in nodes.values():
        node.wait_healthy()
    return Net(nodes["maestro"], nodes["peer1"], tmp)


def stop_net(net: Net) -> None:
    net.peer.stop()
    net.maestro.stop()


# --- helpers ----------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def worker_peak_mib(node: Node) -> dict[int, float]:
    """Peak resident memory (VmHWM) of each gunicorn worker of node's REST server, MiB."""
    master = node.processes[0].pid
    return {pid: _status_kib(pid, "VmHWM") / 1024 for pid in _children(master)}


def _grpc_status(call) -> tuple[str, str]:
    try:
        result = call()
        return "OK", getattr(result, "message", "")
    except grpc.RpcError as err:
        return err.code().name, err.details() or ""


def upload(
    net: Net, name: str, data: bytes, *, size: int | None = None, sha256: str | None = None, overwrite: bool = False
) -> tuple[str, str]:
    """One raw gRPC Upload as an attacker sends it (size and sha256 as given, None: the true ones)."""
    size = len(data) if size is None else size
    sha256 = hashlib.sha256(data).hexdigest() if sha256 is None else sha256
    first = transfer_pb2.FileChunk(data=data, filename=name, size=size, sha256=sha256, overwrite=overwrite)
    return _grpc_status(lambda: net.stub().Upload(iter([first]), timeout=10))


def download(net: Net, name: str) -> tuple[str, bytes, str]:
    """One raw gRPC Download: (status, bytes received, details)."""
    got = bytearray()
    try:
        for chunk in net.stub().Download(transfer_pb2.FileRequest(filename=name), timeout=10):
            got += chunk.data
        return "OK", bytes(got), ""
    except grpc.RpcError as err:
        return err.code().name, bytes(got), err.details() or ""


def visible_files(net: Net) -> list[str]:
    return sorted(os.listdir(net.shared))


def fake_files(count: int, prefix: str = "f") -> list[dict]:
    return [{"name": f"{prefix}{i:06d}.bin", "size": i, "mtime": 1.7e9, "sha256": "ab" * 32} for i in range(count)]


def register_body(name: str, files: list, **extra) -> dict:
    return {
        "name": name,
        "rest_url": "http://127.0.0.1:1",
        "grpc_address": "127.0.0.1:1",
        "heartbeat_interval": 1.0,
        "files": files,
        **extra,
    }


def _status_and_error(resp: requests.Response) -> dict:
    try:
        error = resp.json().get("error")
    except ValueError:
        error = resp.text[:60]
    return {"status": resp.status_code, "error": error}


# --- unbounded input --------------------------------------------------------------------------------


def attack_big_body(node: Node, mib: int = 100, chunked: bool = False) -> dict:
    """POST a JSON body of `mib` MiB to node's /register: status, time and the worker's peak memory growth.

    VmHWM is a running peak, so each worker shows the growth of its first big body only.
    """
    before = worker_peak_mib(node)
    body = b'{"name": "big", "url": "http://127.0.0.1:1", "pad": "' + b"a" * (mib * 1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    data = (body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024)) if chunked else body
    started = time.monotonic()
    try:
        resp = requests.post(node.url + "/register", data=data, headers=headers, timeout=60)
        result = {**_status_and_error(resp), "seconds": round(time.monotonic() - started, 2)}
    except requests.RequestException as err:
        result = {"status": type(err).__name__, "error": str(err)[:80]}
    after = worker_peak_mib(node)
    grown = max((after.get(pid, 0) - rss for pid, rss in before.items()), default=0.0)
    return {**result, "worker_peak_growth_mib": round(grown, 1), "body_mib": mib, "chunked": chunked}


def attack_many_files(net: Net, peers: int = 3, files: int = 100_000) -> dict:
    """Register `peers` fake peers with `files` fake files each; how big /directory gets."""
    statuses = []
    for i in range(peers):
        resp = requests.post(
            net.maestro.url + "/register", json=register_body(f"fake{i}", fake_files(files)), timeout=120
        )
        statuses.append(resp.status_code)
    resp = requests.get(net.maestro.url + "/directory", timeout=120)
    return {
        "register_statuses": statuses,
        "directory_status": resp.status_code,
        "directory_bytes": len(resp.content),
        "directory_files": len(resp.json().get("files", [])),
        "directory_total": resp.json().get("total"),
    }


def post_json(url: str, body: dict) -> requests.Response:
    """POST body as JSON, NaN and Infinity written as the JavaScript literals Python's json reads back."""
    return requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)


def register_entry(net: Net, override: dict) -> dict:
    """Register one file whose fields are those of a good entry with override applied."""
    entry = {"name": "n.bin", "size": 1, "mtime": 1.7e9, "sha256": "ab" * 32, **override}
    return _status_and_error(post_json(net.maestro.url + "/register", register_body("numbers", [entry])))


def attack_numbers(net: Net) -> dict:
    """Sizes and mtimes out of range: 2^70, NaN, Infinity, 1e300, negative; heartbeat intervals."""
    cases: dict[str, dict] = {
        "size_2^70": {"size": 2**70},
        "size_2^63": {"size": 2**63},
        "size_negative": {"size": -1},
        "mtime_nan": {"mtime": math.nan},
        "mtime_inf": {"mtime": math.inf},
        "mtime_1e300": {"mtime": 1e300},
        "mtime_negative": {"mtime": -1e12},
    }
    out = {case: register_entry(net, override) for case, override in cases.items()}
    for case, interval in {"heartbeat_3600": 3600, "heartbeat_1e-9": 1e-9, "heartbeat_nan": math.nan}.items():
        body = register_body("beats", [], heartbeat_interval=interval)
        out[case] = _status_and_error(post_json(net.maestro.url + "/register", body))
    return out


def attack_upload_without_hash(net: Net) -> dict:
    """Upload with size 0 and sha256 "" (both checks skipped before): is anything stored?"""
    status, detail = upload(net, "nohash.txt", b"attacker bytes", size=0, sha256="")
    return {"status": status, "stored": (net.shared / "nohash.txt").exists(), "detail": detail[:80]}


def attack_emoji_name(net: Net) -> dict:
    """A 252-byte emoji name: status, and whether the message shows an absolute path."""
    status, detail = upload(net, EMOJI_252, b"smile")
    return {
        "status": status,
        "absolute_path_in_message": str(net.tmp) in detail or "/" in detail,
        "detail": detail[:100],
        "files": [n for n in visible_files(net) if "\U0001f600" in n][:1],
    }


def attack_twins(net: Net) -> dict:
    """Upload NFC and NFD spellings of one name: how many files look the same to a person."""
    first = upload(net, NFC_NAME, b"nfc")[0]
    second = upload(net, NFD_NAME, b"nfd")[0]
    twins = [n for n in visible_files(net) if unicodedata.normalize("NFC", n) == NFC_NAME]
    return {"nfc_status": first, "nfd_status": second, "files_named_cafe": len(twins)}


FORMAT_NAMES = {
    "rtlo": RTLO_NAME,
    "c1": C1_NAME,
    "zwj": ZWJ_NAME,
    "trailing_dot": "x.",
    "trailing_space": "y ",
}


def attack_format_names(net: Net, labels: list[str] | None = None) -> dict:
    """RTLO, C1, ZWJ, trailing dot and space: at the peer (Upload) and at the Maestro (/register)."""
    out = {}
    for label in labels or list(FORMAT_NAMES):
        name = FORMAT_NAMES[label]
        status = upload(net, name, label.encode())[0]
        entry = {"name": name, "size": 1, "mtime": 1.0, "sha256": "ab" * 32}
        resp = requests.post(net.maestro.url + "/register", json=register_body("names", [entry]), timeout=10)
        out[label] = {"upload": status, "stored": (net.shared / name).exists(), "register": resp.status_code}
    return out


# --- swap races and links ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two directory entries (renameat2 RENAME_EXCHANGE)."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def attack_swap_race(net: Net, tries: int = 2000) -> dict:
    """Flip a shared name between a regular file and a symlink to an outside file while downloading.

    Counts the downloads that carried outside bytes (must be 0) and how the others ended.
    """
    name = "swap.txt"
    (net.shared / name).write_bytes(INSIDE)
    other = net.shared / ".swap-other"
    os.symlink(net.outside / "secret.txt", other)
    stop = threading.Event()
    flips = 0

    def swapper():
        nonlocal flips
        while not stop.is_set():
            exchange(net.shared / name, other)
            flips += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    leaks = 0
    outcomes: dict[str, int] = {}
    details: dict[str, str] = {}
    stub = net.stub()
    started = time.monotonic()
    try:
        for _ in range(tries):
            got = bytearray()
            try:
                for chunk in stub.Download(transfer_pb2.FileRequest(filename=name), timeout=10):
                    got += chunk.data
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
                details.setdefault(code, (err.details() or "")[:100])
            outcomes[code] = outcomes.get(code, 0) + 1
            leaks += b"OUTSIDE-SECRET" in got
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    for path in (net.shared / name, other):
        path.unlink(missing_ok=True)
    return {
        "tries": tries,
        "leaks": leaks,
        "outcomes": outcomes,
        "details": details,
        "flips": flips,
        "downloads_per_s": round(tries / elapsed),
    }


def attack_symlink_to_hidden(net: Net) -> dict:
    """A hidden file and a visible symlink to it inside the share: listed? served?"""
    (net.shared / ".hidden-secret").write_bytes(SECRET)
    os.symlink(".hidden-secret", net.shared / "alias.txt")
    listed = [f["name"] for f in requests.get(net.peer.url + "/files", timeout=10).json()["files"]]
    status, got, _ = download(net, "alias.txt")
    return {"listed": "alias.txt" in listed, "download": status, "served_hidden_bytes": b"OUTSIDE-SECRET" in got}


def attack_hardlink(net: Net) -> dict:
    """A hardlink to an outside file inside the share: listed? served?"""
    os.link(net.outside / "secret.txt", net.shared / "hardlink.txt")
    listed = [f["name"] for f in requests.get(net.peer.url + "/files", timeout=10).json()["files"]]
    status, got, _ = download(net, "hardlink.txt")
    return {"listed": "hardlink.txt" in listed, "download": status, "served_outside_bytes": b"OUTSIDE-SECRET" in got}


# --- socket squatting -------------------------------------------------------------------------------


SQUATTER_UID = 65534  # "nobody": the other user who made the folder first


def deep_topology(tmp: Path) -> Path:
    """A valid topology whose run folder path is too long for an AF_UNIX socket (fallback used)."""
    deep = tmp / ("d" * 60) / ("e" * 60)
    (deep / "data").mkdir(parents=True)
    path = deep / "topology.yaml"
    path.write_text(
        "maestro: {host: 127.0.0.1, port: 1}\n"
        "peers:\n  - {name: peer1, host: 127.0.0.1, rest_port: 2, grpc_port: 3, shared_dir: data,\n"
        "     friends: {primary: peer1b, backup: peer1c}}\n"
        "  - {name: peer1b, host: 127.0.0.1, rest_port: 4, grpc_port: 5, shared_dir: data,\n"
        "     friends: {primary: peer1c, backup: peer1}}\n"
        "  - {name: peer1c, host: 127.0.0.1, rest_port: 6, grpc_port: 7, shared_dir: data,\n"
        "     friends: {primary: peer1, backup: peer1b}}\n"
    )
    return path


def launcher(command: str, topology: Path, env: dict) -> subprocess.CompletedProcess:
    """Run `python launcher.py COMMAND TOPOLOGY` from the project root with env."""
    return subprocess.run([sys.executable, "launcher.py", command, str(topology)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _squat_folder(folder: Path) -> None:
    """Make the socket's folder first, as another user would: open to all, owned by them."""
    if folder.exists():
        return  # /tmp itself (the fallback before the fix)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    if os.geteuid() == 0:
        os.chown(folder, SQUATTER_UID, SQUATTER_UID)


def attack_socket_squat(tmp: Path) -> dict:
    """Listen first on the fallback socket of a network whose run folder path is long, then run
    `launcher.py status` on it: how many XML-RPC requests reach the squatter."""
    topology = deep_topology(tmp)
    env = {**os.environ, RUNTIME_ENV: str(tmp / "runtime")}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from control.render import layout_for; from control.topology import load;"
            " print(layout_for(load(sys.argv[1])).socket)",
            str(topology),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    socket_path = Path(probe.stdout.strip())
    if socket_path.parent == topology.parent / ".run" / "topology":
        return {"socket": str(socket_path), "fallback_used": False}
    received: list[bytes] = []
    squatter = socket.socket(socket.AF_UNIX)
    said = ""
    try:
        _squat_folder(socket_path.parent)
        socket_path.unlink(missing_ok=True)
        squatter.bind(str(socket_path))
        squatter.listen(8)
        squatter.settimeout(0.2)
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                try:
                    conn, _ = squatter.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(1)
                    with contextlib.suppress(OSError):
                        received.append(conn.recv(65536))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        proc = launcher("status", topology, env)
        said = (proc.stderr.strip().splitlines() or [""])[-1]
        stop.set()
        thread.join()
    finally:
        squatter.close()
        socket_path.unlink(missing_ok=True)
    return {
        "socket": str(socket_path),
        "fallback_used": True,
        "requests_to_squatter": len(received),
        "xmlrpc_methods": sorted(
            {r.split(b"<methodName>")[1].split(b"<")[0].decode() for r in received if b"<methodName>" in r}
        ),
        "launcher_said": said[:200],
    }


# --- the whole replay -------------------------------------------------------------------------------


def replay(body_mib: int = 100, swap_tries: int = 2000, files: int = 100_000) -> dict:
    """Every attack once, each on a fresh network where it writes to the folder."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="p2p8b-") as raw:
        tmp = Path(raw)
        net = start_net(tmp / "a")
        try:
            results["maestro_big_body"] = attack_big_body(net.maestro, body_mib)
            results["peer_big_body_chunked"] = attack_big_body(net.peer, body_mib, chunked=True)
            results["maestro_big_body_chunked"] = attack_big_body(net.maestro, body_mib, chunked=True)
            results["numbers"] = attack_numbers(net)
            results["upload_without_hash"] = attack_upload_without_hash(net)
            results["emoji_name"] = attack_emoji_name(net)
            results["twins"] = attack_twins(net)
            results["format_names"] = attack_format_names(net)
            results["symlink_to_hidden"] = attack_symlink_to_hidden(net)
            results["hardlink"] = attack_hardlink(net)
            results["swap_race"] = attack_swap_race(net, swap_tries)
            t0 = time.monotonic()
            results["many_files"] = attack_many_files(net, files=files)
            results["many_files"]["seconds"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            results["files_at_cap"] = attack_many_files(net, files=Settings().max_files_per_peer)
            results["files_at_cap"]["seconds"] = round(time.monotonic() - t0, 1)
        finally:
            stop_net(net)
        results["socket_squat"] = attack_socket_squat(tmp / "s")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body-mib", type=int, default=100)
    parser.add_argument("--swap-tries", type=int, default=2000)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(json.dumps(replay(args.body_mib, args.swap_tries, args.files), indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
