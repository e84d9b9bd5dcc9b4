"""Generate the topology document (SPEC §2) of an N-peer network: a ring or random friends.

Pure apart from asking the OS for free ports when no base port is given.
"""
from __future__ import annotations

import random
import socket

MIN_PEERS = 3          # a primary and a backup friend, both other than the peer itself
MAX_PORT = 65535


def generate_topology(n: int, *, ring: bool = True, seed: int | None = None, base_port: int | None = None,
                      host: str = "127.0.0.1", data_dir: str = "data") -> dict:
    """A topology dict with a Maestro and peers peer1..peerN.

    ring: peer i's friends are i+1 (primary) and i+2 (backup); otherwise two distinct random
    other peers (reproducible with seed). Ports: the Maestro on base_port, then each peer's
    REST and gRPC ports in turn; without base_port, ports the OS reports free now.
    """
    if not isinstance(n, int) or n < MIN_PEERS:
        raise ValueError(f"peers: need at least {MIN_PEERS} (each peer has two friends), got {n!r}")
    count = 1 + 2 * n
    if base_port is None:
        ports = free_ports(count, host)
    else:
        if not 1 <= base_port <= MAX_PORT - count + 1:
            raise ValueError(f"base_port: {base_port} leaves no room for {count} ports below {MAX_PORT + 1}")
        ports = list(range(base_port, base_port + count))
    names = [f"peer{i + 1}" for i in range(n)]
    rng = random.Random(seed)
    peers = []
    for i, name in enumerate(names):
        if ring:
            primary, backup = names[(i + 1) % n], names[(i + 2) % n]
        else:
            primary, backup = rng.sample(names[:i] + names[i + 1:], 2)
        peers.append({"name": name, "host": host, "rest_port": ports[1 + 2 * i],
                      "grpc_port": ports[2 + 2 * i], "shared_dir": f"{data_dir}/{name}",
                      "friends": {"primary": primary, "backup": backup}})
    return {"maestro": {"host": host, "port": ports[0]}, "peers": peers}


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """count distinct ports free now (held together while chosen, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
