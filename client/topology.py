"""What a client learns from the topology it finds: the Maestro, the secret, TLS (docs/security.md).

The one place that finds the topology for a client: `--topology`, then $P2P_TOPOLOGY, then
`./topology.yaml`. The launcher validates topologies in full (control/topology.py); a client
reads only the keys it needs and never refuses a file the launcher would take, so this reader
is lenient: a key that is missing or odd falls back to its default.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from client.credentials import Credentials
from common.config import DEFAULT_TOPOLOGY, TOPOLOGY_ENV, http_url, run_dir_of
from common.security import SecretError, operator_token, read_secret, secret_path
from common.tls import CA_FILE


@dataclass(frozen=True)
class NetworkView:
    """One network as a client sees it from its topology file."""

    path: Path
    maestro_url: str | None
    secret_file: Path
    tls: bool

    @property
    def ca_file(self) -> Path:
        """The network's CA as `launcher.py up`/`render` wrote it on this machine.

        `.run/<stem>/tls/ca.pem`, or a host's own run folder `.run/<stem>@<host>/` on a multi-host
        network: every host derives the same CA from the secret, so any of them will do.
        """
        single = run_dir_of(self.path)
        found = sorted(single.parent.glob(f"{glob.escape(single.name)}@*/tls/{CA_FILE}"))
        return single / "tls" / CA_FILE if (single / "tls" / CA_FILE).is_file() or not found else found[0]

    def operator_token(self) -> str | None:
        """The operator's credential, when this user can read the network's secret file."""
        try:
            return operator_token(read_secret(self.secret_file))
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
    )


def client_network(token: str | None, topology: str | os.PathLike | None = None) -> tuple[str | None, Credentials]:
    """What the CLI learns from the topology it finds: the Maestro's URL (None: not said) and its credentials.

    The credentials are token if given, else the operator's from the topology's secret; with
    TLS, the network's CA.
    """
    path = find_topology(topology)
    view = read_network(path) if path is not None else None
    if not token and view is not None:
        token = view.operator_token()
    ca = str(view.ca_file) if view is not None and view.tls and view.ca_file.is_file() else None
    return (view.maestro_url if view is not None else None), Credentials(token=token or None, ca_file=ca)
