"""The one JSON config each node reads: who it is, where it listens, whom it knows.

The launcher renders these files from topology.yaml; a process finds its file
through the P2P_CONFIG environment variable or a --config flag. Nothing here
runs at import time.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CONFIG_ENV = "P2P_CONFIG"
TOPOLOGY_ENV = "P2P_TOPOLOGY"  # the launcher's -t and the client's --topology
DEFAULT_TOPOLOGY = "topology.yaml"
DEFAULT_TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")
READ_MODES = ("open", "members")  # security.read: whether GETs and Download need a credential too
# security.local_operator: which account on this machine is the operator without a token (docs/security.md)
LOCAL_OPERATOR_MODES = ("owner", "any", "none")


@dataclass(frozen=True)
class Settings:
    """Tunables shared by every node; topology.yaml `settings:` overrides them."""

    heartbeat_interval: float = 2.0  # seconds between a peer's beats to the Maestro
    heartbeat_jitter: float = 0.1  # fraction of the interval added at random
    expire_after_beats: float = 3.0  # missed beats before the Maestro marks a peer not alive
    request_timeout: float = 2.0  # one REST call to a friend or the Maestro, seconds
    search_timeout: float = 3.0  # what a new flood search may take in all, seconds
    locate_timeout: float = 5.0  # what a new P2P locate may take in all, seconds
    # gunicorn workers of a peer's REST server: one gevent worker holds every connection and hop
    # (a search costs about a millisecond of CPU per peer), in a third of the memory of two
    rest_workers: int = 1
    maestro_rest_workers: int = 2  # the Maestro's: its /locate is the network's hottest call
    rest_worker_class: str = "gevent"  # gevent: a slow client or a waiting hop holds a greenlet, not a thread
    rest_threads: int = 4  # gunicorn threads per worker (gthread only)
    rest_connections: int = 1000  # connections one gevent worker holds at once (gunicorn --worker-connections)
    grpc_workers: int = 24  # threads for a gRPC server's transfer calls (kept above the transfer limit)
    chunk_size: int = 1024 * 1024  # bytes per streamed FileChunk
    max_upload_bytes: int = 4 * 1024**3
    max_concurrent_transfers: int = 16  # gRPC transfer calls at once (a multi-stream download uses several)
    transfer_slots_per_connection: int = 8  # of those, what one client connection may hold; 0 = no share
    transfer_slots_per_address: int = 0  # what one client address may hold over all its connections; 0 = no share
    transfer_idle_timeout: float = 10.0  # seconds a transfer call waits for its client's next message (or for
    #                                      room to send one) before it is cut; 0 = never
    transfer_stall_timeout: float = 30.0  # seconds of waiting on its client a transfer call has in hand ...
    transfer_min_rate: int = 8192  # ... earned back at one second per transfer_min_rate bytes moved; 0 = off
    max_transfer_rate: int = 0  # bytes per second a peer sends or receives in all; 0 = unlimited
    search_default_ttl: int = 7  # Gnutella's default for new queries
    search_max_ttl: int = 10
    search_max_fanout: int = 8
    search_default_fanout: int = 2
    # New searches and P2P locates one REST worker floods at once; the others wait in line. One per
    # worker keeps a burst first come first served: more in flight network-wide makes every hop
    # slower, until hops pass request_timeout and whole searches come back partial.
    search_concurrency: int = 1
    max_query_length: int = 256
    prune_after_failures: int = 3  # known peers that fail this often in a row are dropped
    max_body_bytes: int = 16 * 1024 * 1024  # REST request bodies above this are refused (413), chunked or not
    max_files_per_peer: int = 10_000  # files a peer shares and registers; the Maestro refuses more (413)
    max_heartbeat_interval: float = 60.0  # longest beat interval a peer may announce (its expiry scales with it)
    # A friend that did not answer (timeout, refused) is skipped by discovery for down_mark seconds,
    # doubled for each further failure in a row up to down_mark_max: a cut-off friend costs one
    # timeout per mark, not one per lookup. Any answer clears the mark.
    down_mark: float = 5.0
    down_mark_max: float = 30.0
    # While a friend carries a down mark, a lookup that would skip it probes its /health first, at most
    # once per down_mark_probe seconds (all workers together): a friend that is back ends its mark at
    # once. 0: no probes (a mark ends by its time, or when the friend answers or introduces itself).
    down_mark_probe: float = 1.0
    # While the Maestro (or a friend) cannot be reached, a peer retries with doubling waits up to this.
    retry_backoff_max: float = 15.0
    # seconds a fast-lane ticket stays valid (OpenLane, then sendfile on an OS-chosen port of the gRPC
    # bind address); 0 turns this peer's lane off and clients use the gRPC Download stream
    lane_ticket_seconds: float = 10.0

    # Disk space (a full disk degrades to 507 / RESOURCE_EXHAUSTED, never to crashes): an upload is refused
    # when it would leave less than disk_reserve_bytes free on the shared folder's disk, which the nodes'
    # databases, logs and metrics need; and when the uploader's files on this peer would pass
    # member_quota_bytes (0: no quota). The operator has no quota, only the reserve.
    disk_reserve_bytes: int = 128 * 1024**2
    member_quota_bytes: int = 8 * 1024**3
    # Bytes per second the peer's background scrub reads to hash its files again, catching bytes that
    # changed with no trace in the file's status (each file counts as at least 1 MiB); 0: no scrub.
    scrub_rate: int = 8 * 1024**2

    max_learned_peers: int = 64  # peers learned over /register and /bootstrap (friends aside); more are refused
    access_log: bool = True  # one line per REST request in the program's log (~7-13% of a saturated /locate)


# Settings that are words, with the values they may take (every other setting is a number).
SETTING_CHOICES = {"rest_worker_class": ("gevent", "gthread")}


@dataclass(frozen=True)
class Friend:
    name: str
    rest_url: str


@dataclass(frozen=True)
class Security:
    """The topology's `security:` section as a node needs it (docs/security.md; common/security.py uses it)."""

    secret_file: str = ""  # absolute path of the network's secret; "" = none: only trusted addresses may write
    trusted_networks: tuple[str, ...] = DEFAULT_TRUSTED_NETWORKS  # callers from here act as the operator
    read: str = "open"  # "members": GETs and Download need a credential too
    tls: bool = False  # REST over https and gRPC over TLS, certificates in tls_dir
    tls_dir: str = ""  # the run folder's tls/: ca.pem, <node>.pem, <node>.key
    allow_hardlinks: bool = False  # share files with other hard links (off: a link may expose a file kept elsewhere)
    allowed_hosts: tuple[str, ...] = ()  # names the node answers to in Host, besides host, bind and localhost
    # a caller on this machine from a trusted address is the operator: "owner" only the secret file's
    # owner (and root), "any" every account, "none" nobody (it needs a token)
    local_operator: str = "owner"

    @classmethod
    def from_json(cls, data: dict | None) -> Security:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (data or {}).items() if k in known}
        for key in ("trusted_networks", "allowed_hosts"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class NodeConfig:
    """Everything one process needs to know about itself."""

    role: str  # "maestro" or "peer"
    name: str
    host: str
    rest_port: int
    run_dir: str
    grpc_port: int = 0
    shared_dir: str = ""
    maestro_url: str = ""
    friends: dict[str, Friend] = field(default_factory=dict)  # "primary"/"backup" -> Friend
    settings: Settings = field(default_factory=Settings)
    security: Security = field(default_factory=Security)
    bind: str = ""  # the address it listens on, when not host (e.g. 0.0.0.0 behind NAT)
    lane_port: int = 0  # the fast lane's port (0: one the OS picks; containers publish a fixed one)

    @property
    def rest_url(self) -> str:
        return http_url(self.host, self.rest_port, tls=self.security.tls)

    @property
    def rest_bind(self) -> str:
        return address(self.bind or self.host, self.rest_port)

    @property
    def grpc_bind(self) -> str:
        return address(self.bind or self.host, self.grpc_port)

    @property
    def grpc_address(self) -> str:
        return address(self.host, self.grpc_port)

    @property
    def db_path(self) -> str:
        return os.path.join(self.run_dir, f"{self.name}.sqlite3")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> NodeConfig:
        data = dict(data)
        known = {f.name for f in fields(Settings)}
        settings = {k: v for k, v in (data.pop("settings", None) or {}).items() if k in known}
        friends = {role: Friend(**f) for role, f in (data.pop("friends", None) or {}).items() if f}
        security = Security.from_json(data.pop("security", None))
        return cls(friends=friends, settings=Settings(**settings), security=security, **data)


def address(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets (gRPC targets, gunicorn --bind)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_of(target: str) -> str:
    """The host of a HOST:PORT address, without IPv6 brackets (the inverse of address())."""
    host = target.rpartition(":")[0] if ":" in target else target
    return host.strip("[]")


def http_url(host: str, port: int, *, tls: bool = False) -> str:
    """The http:// (https:// with TLS) URL of a REST server."""
    return f"{'https' if tls else 'http'}://{address(host, port)}"


def run_dir_of(topology_path: str | os.PathLike) -> Path:
    """The run folder of a topology: `.run/<topology stem>/` beside the file."""
    path = Path(topology_path).absolute()
    return path.parent / ".run" / path.stem


def load_config(path: str | os.PathLike | None = None) -> NodeConfig:
    """Read the node config from path, or from $P2P_CONFIG when path is None.

    $P2P_CONFIG names a file or holds the JSON itself (a container's environment, see
    docs/kubernetes.md): a value that starts with `{` is the config.
    """
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise SystemExit(f"no node config: pass --config or set {CONFIG_ENV}")
    if str(path).lstrip().startswith("{"):
        return NodeConfig.from_json(json.loads(str(path)))
    with open(path, encoding="utf-8") as fh:
        return NodeConfig.from_json(json.load(fh))


def write_config(config: NodeConfig, path: str | os.PathLike) -> None:
    """Write config as JSON to path (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
