"""Generate an N-peer topology: a ring (friends i+1, i+2) or random friends (pure)."""
from __future__ import annotations

import random
import socket
from collections.abc import Callable

MIN_PEERS = 3           # a primary and a backup friend, both other than the peer itself


def generate(peers: int, ports: list[int], *, ring: bool = True, seed: int | None = None,
             host: str = "127.0.0.1", data_dir: str = "data", settings: dict | None = None) -> dict:
    """The topology document for `peers` peers; ports[0] is the Maestro's, then rest/grpc pairs."""
    if peers < MIN_PEERS:
        raise ValueError(f"--peers: {peers} is too few (at least {MIN_PEERS}: each peer needs two friends)")
    if len(ports) != 1 + 2 * peers:
        raise ValueError(f"need {1 + 2 * peers} ports, got {len(ports)}")
    names = [f"peer{i + 1}" for i in range(peers)]
    pick: Callable[[int], tuple[str, str]]
    if ring:
        def pick(i: int) -> tuple[str, str]:
            return names[(i + 1) % peers], names[(i + 2) % peers]
    else:
        rng = random.Random(seed)

        def pick(i: int) -> tuple[str, str]:
            primary, backup = rng.sample([n for n in names if n != names[i]], 2)
            return primary, backup
    doc: dict = {"maestro": {"host": host, "port": ports[0]}, "peers": []}
    for i, name in enumerate(names):
        primary, backup = pick(i)
        doc["peers"].append({
            "name": name, "host": host, "rest_port": ports[1 + 2 * i], "grpc_port": ports[2 + 2 * i],
            "shared_dir": f"{data_dir}/{name}", "friends": {"primary": primary, "backup": backup}})
    if settings:
        doc["settings"] = dict(settings)
    return doc


def base_ports(base: int, peers: int) -> list[int]:
    """Consecutive ports from base: the Maestro, then each peer's rest and grpc."""
    return list(range(base, base + 1 + 2 * peers))


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free now: bound to port 0 all together, then released."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
