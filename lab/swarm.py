"""A swarm on one machine: holders in network namespaces, each behind an uplink cap, and a client host.

    with Swarm(folder, ["h1", "h2", "h3"], files={"big.bin": 256 * MiB}, maestro=True) as swarm:
        swarm.lab.cap("h3", "16mbit")
        proc = swarm.client([*swarm.cli, "download", "big.bin", "--out", str(out)])

Every holder is a real peer gRPC process (a download needs nothing else of it) sharing the same
files (hard links, which its config allows). With maestro=True a Maestro runs on the client host
and the holders register there, so the CLI finds them as a user's would. Caps, cuts and heals
are lab/netns.py's (tc tbf on the holder's own interface: what it sends, i.e. its uplink).
Namespaces are named p2p19-<pid>-..., addresses exist only inside them (10.219.x.x), and
everything (processes included) is removed on exit. Root only: `unavailable()` says why not.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import blake3

from common.config import CONFIG_ENV, NodeConfig, Security, Settings, write_config
from control.processes import PROJECT_ROOT, node_programs
from lab.netns import Lab, unavailable

__all__ = ["Swarm", "unavailable"]

PREFIX, SUBNET = "p2p19", "10.219"
GRPC_PORT, REST_PORT, MAESTRO_PORT = 50051, 18080, 19000
SETTINGS = Settings(heartbeat_interval=0.5, request_timeout=1.0)
MiB = 1024 * 1024


def make_file(path: Path, size: int) -> None:
    """size random bytes (written in 8 MiB blocks)."""
    with open(path, "wb") as fh:
        for offset in range(0, size, 8 * MiB):
            fh.write(os.urandom(min(8 * MiB, size - offset)))


def digests(path: Path) -> tuple[int, str, str]:
    sha, b3 = hashlib.sha256(), blake3.blake3()
    with open(path, "rb") as fh:
        while block := fh.read(8 * MiB):
            sha.update(block)
            b3.update(block)
    return path.stat().st_size, sha.hexdigest(), b3.hexdigest()


class Swarm:
    """Holders behind caps and a client host, on one bridge; a context manager that always cleans up."""

    def __init__(
        self,
        folder: Path,
        holders: list[str],
        files: dict[str, int],
        *,
        only: dict[str, list[str]] | None = None,
        maestro: bool = False,
        lab_id: int | None = None,
    ) -> None:
        self.folder = folder
        self.names = holders
        self.files = files
        self.holders_of = {name: (only or {}).get(name, holders) for name in files}  # who shares each file
        self.with_maestro = maestro
        self.lab = Lab(["client", *holders], prefix=PREFIX, subnet=SUBNET, lab_id=lab_id)
        self.content: dict[str, tuple[int, str, str]] = {}  # file -> (size, sha256, blake3)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> Swarm:
        try:
            self.lab.create()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.lab.destroy()  # and whatever else still runs in its namespaces

    def _start(self) -> None:
        store = self.folder / "files"
        store.mkdir(parents=True, exist_ok=True)
        for name, size in self.files.items():
            path = store / name
            if not path.exists() or path.stat().st_size != size:
                make_file(path, size)
            self.content[name] = digests(path)
        security = Security(allow_hardlinks=True, trusted_networks=(f"{SUBNET}.0.0/16", "127.0.0.0/8"))
        maestro = NodeConfig(
            role="maestro",
            name="maestro",
            host=self.addr("client"),
            rest_port=MAESTRO_PORT,
            run_dir=str(self.folder / "run" / "maestro"),
            settings=SETTINGS,
            security=security,
        )
        maestro = replace(maestro, maestro_url=maestro.rest_url)
        if self.with_maestro:
            path = self.folder / "run" / "maestro.json"
            write_config(maestro, path)
            argv = node_programs(maestro, str(path))["maestro"]
            self._spawn("maestro", "client", argv, {CONFIG_ENV: str(path)})
        for holder in self.names:
            shared = self.folder / "data" / holder
            shared.mkdir(parents=True, exist_ok=True)
            for name in self.files:
                if holder in self.holders_of[name] and not (shared / name).exists():
                    os.link(store / name, shared / name)
            config = NodeConfig(
                role="peer",
                name=holder,
                host=self.addr(holder),
                rest_port=REST_PORT,
                grpc_port=GRPC_PORT,
                shared_dir=str(shared),
                run_dir=str(self.folder / "run" / holder),
                maestro_url=maestro.rest_url if self.with_maestro else f"http://{self.addr(holder)}:1",
                settings=SETTINGS,
                security=security,
            )
            path = self.folder / "run" / f"{holder}.json"
            write_config(config, path)
            self._spawn(holder, holder, [sys.executable, "-m", "peer_app.grpc_server", "--config", str(path)], {})
        deadline = time.monotonic() + 60
        for holder in self.names:
            self._wait(lambda h=holder: self._listening(h, GRPC_PORT), deadline, f"{holder}'s gRPC server")
        if self.with_maestro:
            self._wait(lambda: self._listening("client", MAESTRO_PORT), deadline, "the Maestro")
            for name in self.files:
                self.wait_located(name, deadline - time.monotonic())

    def wait_located(self, name: str, timeout: float = 30) -> None:
        """Until the Maestro lists every holder of name (after a cut: until the holder is back)."""
        deadline = time.monotonic() + timeout
        self._wait(lambda: set(self.located(name)) == set(self.holders_of[name]), deadline, f"every holder of {name}")

    def _spawn(self, key: str, host: str, argv: list[str], env: dict[str, str]) -> None:
        log = self.folder / "run" / f"{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[key] = log
        with open(log, "ab") as out:
            self.procs[key] = self.lab.popen(
                host,
                argv,
                cwd=PROJECT_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _wait(self, ready, deadline: float, what: str) -> None:
        while not ready():
            for key, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{key} exited: {self.tail(key)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _listening(self, host: str, port: int) -> bool:
        out = self.lab.run(host, ["ss", "-Hltn", f"sport = :{port}"], timeout=10).stdout
        return bool(out.strip())

    # -- what tests and benchmarks use ---------------------------------------------------------
    def addr(self, host: str) -> str:
        return self.lab.hosts[host].addr

    @property
    def maestro_url(self) -> str:
        return f"http://{self.addr('client')}:{MAESTRO_PORT}"

    @property
    def cli(self) -> list[str]:
        """The client command as a user runs it, pointed at the swarm's Maestro."""
        return [sys.executable, "-m", "peer_app.client", "--maestro", self.maestro_url]

    def entry(self, holder: str, name: str) -> dict:
        """holder's /locate entry for file name (what the library is handed)."""
        size, sha256, b3 = self.content[name]
        return {"name": holder, "grpc_address": f"{self.addr(holder)}:{GRPC_PORT}", "size": size,
                "sha256": sha256, "blake3": b3}  # fmt: skip

    def located(self, name: str) -> list[str]:
        """Who the Maestro says holds name (asked from the client host)."""
        import json

        proc = self.lab.run("client", [*self.cli, "--json", "locate", name], timeout=30, cwd=PROJECT_ROOT)
        if proc.returncode != 0:
            return []
        return [p["name"] for p in json.loads(proc.stdout)["peers"]]

    def client(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start argv on the client host (cwd: the project, unless given)."""
        kwargs.setdefault("cwd", PROJECT_ROOT)
        return self.lab.popen("client", argv, **kwargs)

    def tail(self, key: str, lines: int = 20) -> str:
        log = self.logs.get(key)
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
