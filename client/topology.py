"""What a client learns from the topology it finds: the Maestro, its nodes, the secret, TLS (docs/security.md).

The one place that finds the topology for a client: `--topology`, then $P2P_TOPOLOGY, then
`./topology.yaml`. The launcher validates topologies in full (control/topology.py); a client
reads only the keys it needs and never refuses a file the launcher would take, so this reader
is lenient: a key that is missing or odd falls back to its default.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from client.keys import Keys
from common.config import DEFAULT_TOPOLOGY, TOPOLOGY_ENV, address, http_url, run_dir_of
from common.security import SecretError, operator_token, read_secret, secret_path
from common.tls import CA_FILE


@dataclass(frozen=True)
class NetworkView:
    """One network as a client sees it from its topology file."""

    path: Path
    maestro_url: str | None
    secret_file: Path
    tls: bool
    read: str = "open"  # security.read: "members" closes reads to credentials
    peers: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (REST URL, gRPC address)

    @property
    def ca_file(self) -> Path:
        """The network's CA as `launcher.py up`/`render` wrote it on this machine.

        `.run/<stem>/tls/ca.pem`, or a host's own run folder `.run/<stem>@<host>/` on a multi-host
        network: every host derives the same CA from the secret, so any of them will do.
        """
        single = run_dir_of(self.path)
        found = sorted(single.parent.glob(f"{glob.escape(single.name)}@*/tls/{CA_FILE}"))
        return single / "tls" / CA_FILE if (single / "tls" / CA_FILE).is_file() or not found else found[0]

    def secret(self) -> bytes | None:
        """The network's secret, when this user can read its file."""
        try:
            return read_secret(self.secret_file)
        except SecretError:
            return None


def find_topology(explicit: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None) -> Path | None:
    """The topology a client uses: explicit, else $P2P_TOPOLOGY, else ./topology.yaml if it exists."""
    if explicit:
        return Path(explicit).absolute()
    from_env = os.environ.get(TOPOLOGY_ENV)
    if from_env:
        return Path(from_env).absolute()
    default = Path(cwd or os.getcwd()) / DEFAULT_TOPOLOGY
    return default.absolute() if default.is_file() else None


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def read_network(path: str | os.PathLike) -> NetworkView | None:
    """What the topology at path says about its network; None when it cannot be read as one."""
    path = Path(path).absolute()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    security = _mapping(data.get("security"))
    tls = security.get("tls") is True
    maestro = _mapping(data.get("maestro"))
    host, port = maestro.get("host"), maestro.get("port")
    url = http_url(host, port, tls=tls) if isinstance(host, str) and isinstance(port, int) else None
    raw_secret = security.get("secret_file")
    return NetworkView(
        path=path,
        maestro_url=url,
        tls=tls,
        secret_file=secret_path(path.parent, raw_secret if isinstance(raw_secret, str) else None),
        read="members" if security.get("read") == "members" else "open",
        peers=_peers(data.get("peers"), tls),
    )


def _peers(raw: object, tls: bool) -> dict[str, tuple[str, str]]:
    """The peers a topology names, as {name: (REST URL, gRPC address)}; entries it cannot read are skipped."""
    found: dict[str, tuple[str, str]] = {}
    for item in raw if isinstance(raw, list) else []:
        item = _mapping(item)
        name, host, rest, grpc = (item.get(k) for k in ("name", "host", "rest_port", "grpc_port"))
        if isinstance(name, str) and isinstance(host, str) and isinstance(rest, int) and isinstance(grpc, int):
            found[name] = (http_url(host, rest, tls=tls), address(host, grpc))
    return found


def client_keys(token: str | None, topology: str | os.PathLike | None = None) -> tuple[str | None, Keys]:
    """What the CLI learns from the topology it finds: the Maestro's URL (None: not said) and its keys.

    The credential is token if given, else the operator's from the topology's secret; the
    network's own nodes are those the topology names; with TLS, the network's CA.
    """
    path = find_topology(topology)
    view = read_network(path) if path is not None else None
    if view is None:
        return None, Keys(token=token or None)
    secret = view.secret()
    if not token and secret is not None:
        token = operator_token(secret)
    ca = str(view.ca_file) if view.tls and view.ca_file.is_file() else None
    keys = Keys(token or None, ca, reads_open=view.read == "open", peers=view.peers, secret=secret)
    own = [*([view.maestro_url] if view.maestro_url else []), *(a for pair in view.peers.values() for a in pair)]
    return view.maestro_url, keys.with_own(own)
