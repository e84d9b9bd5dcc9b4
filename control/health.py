"""Is a node up? REST /health, gRPC health, registration at the Maestro; polled with deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import requests
from grpc_health.v1 import health_pb2

from common.config import address, http_url
from common.http import new_session
from common.rpc import health_stub
from common.security import SecretError, bearer, operator_token, read_secret
from common.tls import CA_FILE
from control.topology import MAESTRO, Topology

PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Access:
    """How the launcher reaches its network: as the operator (token from the secret), over TLS or not."""

    headers: dict[str, str]
    ca_file: str | None = None

    @classmethod
    def of(cls, topology: Topology) -> Access:
        try:
            headers = bearer(operator_token(read_secret(topology.security.secret_file)))
        except SecretError:
            headers = {}  # no secret yet: a network never rendered; probes fail as they would anyway
        from control.render import layout_for  # this host's run folder (render imports nothing of ours here)

        tls = topology.security.tls
        return cls(headers, str(layout_for(topology).tls_dir / CA_FILE) if tls else None)

    @property
    def verify(self) -> str | bool:
        return self.ca_file or True

    def channel(self, address: str) -> grpc.Channel:
        if not self.ca_file:
            return grpc.insecure_channel(address)
        try:
            with open(self.ca_file, "rb") as fh:
                roots = fh.read()
        except OSError:
            roots = None
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))


PLAIN = Access({})


def get_json(url: str, timeout: float = PROBE_TIMEOUT, access: Access = PLAIN) -> dict | None:
    """GET url and return its JSON body when the answer is 200, else None."""
    try:
        with new_session() as session:
            resp = session.get(url, timeout=timeout, headers=access.headers, verify=access.verify)
            if resp.status_code != 200:
                return None
            body = resp.json()
            return body if isinstance(body, dict) else None
    except (requests.RequestException, ValueError, OSError):  # OSError: requests cannot read the CA file
        return None


def rest_healthy(url: str, timeout: float = PROBE_TIMEOUT, access: Access = PLAIN) -> bool:
    body = get_json(f"{url}/health", timeout, access)
    return body is not None and body.get("status") == "ok"


def grpc_healthy(address: str, timeout: float = PROBE_TIMEOUT, access: Access = PLAIN) -> bool:
    """True when the gRPC health service answers SERVING for the whole server ("")."""
    with access.channel(address) as channel:
        try:
            reply = health_stub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def maestro_peers(maestro_url: str, timeout: float = PROBE_TIMEOUT, access: Access = PLAIN) -> dict[str, dict] | None:
    """The Maestro's /peers by name, or None when the Maestro does not answer."""
    body = get_json(f"{maestro_url}/peers", timeout, access)
    if body is None or not isinstance(body.get("peers"), list):
        return None
    return {p["name"]: p for p in body["peers"] if isinstance(p, dict) and "name" in p}


@dataclass(frozen=True)
class NodeHealth:
    """What the network says about one node right now (None: does not apply or unknown)."""

    node: str
    rest: bool
    grpc: bool | None = None
    registered: bool | None = None
    files: int | None = None

    @property
    def healthy(self) -> bool:
        return self.rest and self.grpc is not False

    @property
    def ready(self) -> bool:
        return self.healthy and self.registered is not False


def probe(
    topology: Topology, nodes: Iterable[str] | None = None, *, with_files: bool = False, timeout: float = PROBE_TIMEOUT
) -> dict[str, NodeHealth]:
    """Probe the given nodes (all by default) in parallel."""
    names = list(topology.node_names if nodes is None else nodes)
    peers = [n for n in names if n != MAESTRO]
    access = Access.of(topology)
    tls = topology.security.tls

    def one(name: str, registry: dict[str, dict] | None) -> NodeHealth:
        host = topology.contact_host(name)
        if name == MAESTRO:
            return NodeHealth(
                MAESTRO, rest=rest_healthy(http_url(host, topology.maestro.port, tls=tls), timeout, access)
            )
        spec = topology.peer(name)
        url = http_url(host, spec.rest_port, tls=tls)
        if with_files:
            info = get_json(f"{url}/info", timeout, access)
            rest = info is not None and rest_healthy(url, timeout, access)
            files = info.get("file_count") if info else None
        else:
            rest, files = rest_healthy(url, timeout, access), None
        entry = (registry or {}).get(name)
        registered = None if registry is None else bool(entry and entry.get("alive"))
        return NodeHealth(
            name,
            rest=rest,
            grpc=grpc_healthy(address(host, spec.grpc_port), timeout, access),
            registered=registered,
            files=files if isinstance(files, int) else None,
        )

    registry = maestro_peers(maestro_contact_url(topology), timeout, access) if peers else None
    if peers and registry is None and topology.is_local(MAESTRO):
        registry = {}  # our own Maestro is down: nobody counts as registered
    # (a Maestro on another host that does not answer leaves registration unknown: peers keep trying)
    with ThreadPoolExecutor(max_workers=min(32, len(names) or 1)) as pool:
        results = list(pool.map(lambda n: one(n, registry), names))
    return {h.node: h for h in results}


def maestro_contact_url(topology: Topology) -> str:
    """The Maestro's URL as seen from this machine."""
    return http_url(topology.contact_host(MAESTRO), topology.maestro.port, tls=topology.security.tls)


def wait_until_ready(
    topology: Topology,
    nodes: Iterable[str],
    deadline: float,
    lost: Callable[[], set[str]] = set,
    settled: Callable[[], set[str]] | None = None,
    interval: float = 0.1,
) -> set[str]:
    """Poll until every node is ready or the deadline passes; return the nodes not ready.

    `lost()` names nodes known to be gone for good (e.g. FATAL in supervisord): waiting stops
    early for them. `settled()`, when given, names the nodes whose processes the supervisor
    counts as started; a node is ready only when it is among them too.
    """
    pending = set(nodes)
    while pending:
        gone = lost() & pending
        ok = settled() if settled is not None else pending
        status = probe(topology, sorted(pending - gone))
        pending = {n for n in pending if n in gone or n not in ok or not status[n].ready}
        if not pending or pending <= gone or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return pending
