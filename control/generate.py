"""Generate an N-peer topology: a ring (friends i+1, i+2) or random friends (pure)."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

SEED_PORTS = range(9000, 9007)  # the seed network's: a user's demo may hold them
MIN_PEERS = 3  # a primary and a backup friend, both other than the peer itself


def generate(
    peers: int,
    ports: list[int],
    *,
    ring: bool = True,
    seed: int | None = None,
    host: str = "127.0.0.1",
    hosts: list[str] | None = None,
    data_dir: str = "data",
    settings: dict | None = None,
) -> dict:
    """The topology document for `peers` peers; ports[0] is the Maestro's, then rest/grpc pairs.

    With hosts, the Maestro goes to the first one and peer i to hosts[i % len(hosts)], so with
    three hosts or more a ring's friends (i+1, i+2) are on other hosts.
    """
    hosts = list(hosts or [host])
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

    doc: dict = {"maestro": {"host": hosts[0], "port": ports[0]}, "peers": []}
    for i, name in enumerate(names):
        primary, backup = pick(i)
        doc["peers"].append(
            {
                "name": name,
                "host": hosts[i % len(hosts)],
                "rest_port": ports[1 + 2 * i],
                "grpc_port": ports[2 + 2 * i],
                "shared_dir": f"{data_dir}/{name}",
                "friends": {"primary": primary, "backup": backup},
            }
        )
    if settings:
        doc["settings"] = dict(settings)
    return doc


def base_ports(base: int, peers: int) -> list[int]:
    """Consecutive ports from base: the Maestro, then each peer's rest and grpc."""
    return list(range(base, base + 1 + 2 * peers))


def _ephemeral_floor() -> int:
    """Lowest port the kernel hands to outgoing connections (Linux: ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()  # ports this process already gave out: free now, but someone's soon


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free now, drawn at random from below the kernel's ephemeral range.

    A port is never handed out twice by one process, so separate calls (a test that asks
    for one port per server) cannot get the same port before its server binds it.

    A port taken from bind(0) is an ephemeral one: before our server binds it, any
    outgoing connection on this machine may get it as its local port. Below the
    ephemeral range only a listening server can hold a port. The seed ports are skipped.
    """
    low, high = 10000, _ephemeral_floor()
    rng = random.SystemRandom()
    ports: list[int] = []
    attempts = 100 * n + 1000
    while len(ports) < n:
        attempts -= 1
        if attempts < 0:
            raise RuntimeError(f"could not find {n} free ports between {low} and {high}")
        port = rng.randrange(low, high)
        if port in ports or port in _HANDED_OUT or port in SEED_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        ports.append(port)
    _HANDED_OUT.update(ports)
    return ports
