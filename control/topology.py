"""The topology model: load topology.yaml, validate every key, collect every problem.

Each converter reads one key and reports a problem as one line that names the key
(`peers[1].rest_port: 9001 is already used by peers[0].rest_port`); validation goes on
after a problem so the user sees all of them at once.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from common.browsers import check_host_name
from common.config import (
    DEFAULT_TRUSTED_NETWORKS,
    LOCAL_OPERATOR_MODES,
    READ_MODES,
    SETTING_CHOICES,
    Settings,
    address,
    http_url,
)
from common.names import peer_name_problem
from common.net import WILDCARDS, bind_errno, is_local_address
from common.security import DEFAULT_SECRET_FILE, secret_path
from control.errors import TopologyError

MAESTRO = "maestro"
TOP_KEYS = ("maestro", "peers", "settings", "security")
MAESTRO_KEYS = ("host", "bind", "port")
PEER_KEYS = ("name", "host", "bind", "rest_port", "grpc_port", "lane_port", "shared_dir", "friends")
AUTO = "auto"  # `up --host auto`: the nodes whose address belongs to this machine
SECURITY_KEYS = ("secret_file", "trusted_networks", "read", "tls", "allow_hardlinks", "allowed_hosts", "local_operator")
SECURITY_FLAGS = ("tls", "allow_hardlinks")  # the section's true/false keys
FRIEND_ROLES = ("primary", "backup")
# settings that may be zero; every other one must be positive
_MAY_BE_ZERO = {
    "heartbeat_jitter",
    "lane_ticket_seconds",
    "disk_reserve_bytes",
    "member_quota_bytes",
    "scrub_rate",
    "down_mark_probe",
}


@dataclass(frozen=True)
class MaestroSpec:
    host: str  # the address it advertises
    port: int
    bind: str | None = None  # the address it listens on (default: host)
    tls: bool = False

    @property
    def url(self) -> str:
        return http_url(self.host, self.port, tls=self.tls)

    @property
    def listen(self) -> str:
        return self.bind or self.host


@dataclass(frozen=True)
class PeerSpec:
    name: str
    host: str
    rest_port: int
    grpc_port: int
    shared_dir: Path  # absolute
    primary: str
    backup: str
    bind: str | None = None  # the address it listens on (default: host)
    tls: bool = False
    lane_port: int | None = None  # the fast lane's fixed port (default: one the OS picks)

    @property
    def listen(self) -> str:
        return self.bind or self.host

    @property
    def rest_url(self) -> str:
        return http_url(self.host, self.rest_port, tls=self.tls)

    @property
    def grpc_address(self) -> str:
        return address(self.host, self.grpc_port)


@dataclass(frozen=True)
class SecuritySpec:
    """The `security:` section (docs/security.md), with the secret file's path made absolute."""

    secret_file: Path
    trusted_networks: tuple[str, ...] = DEFAULT_TRUSTED_NETWORKS
    read: str = "open"
    tls: bool = False
    allow_hardlinks: bool = False
    allowed_hosts: tuple[str, ...] = ()
    local_operator: str = "owner"


@dataclass(frozen=True)
class Topology:
    path: Path  # the topology file, absolute
    maestro: MaestroSpec
    peers: tuple[PeerSpec, ...]
    settings: Settings
    security: SecuritySpec = field(default_factory=lambda: SecuritySpec(Path(DEFAULT_SECRET_FILE)))
    # Which nodes run on this machine (docs/operations.md); None: all of them (a single-machine network).
    local: frozenset[str] | None = None
    host_label: str = ""  # names this machine's run folder when only some nodes are local

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def node_names(self) -> list[str]:
        return [MAESTRO, *(p.name for p in self.peers)]

    @property
    def local_names(self) -> list[str]:
        """The nodes this machine runs, in topology order."""
        return [n for n in self.node_names if self.is_local(n)]

    def is_local(self, node: str) -> bool:
        return self.local is None or node in self.local

    def key(self, node: str) -> str:
        """The node's key in the file: `maestro` or `peers[i]`."""
        if node == MAESTRO:
            return MAESTRO
        return f"peers[{[p.name for p in self.peers].index(node)}]"

    def host_of(self, node: str) -> str:
        return self.maestro.host if node == MAESTRO else self.peer(node).host

    def listen_of(self, node: str) -> str:
        return self.maestro.listen if node == MAESTRO else self.peer(node).listen

    def url_of(self, node: str) -> str:
        return self.maestro.url if node == MAESTRO else self.peer(node).rest_url

    def contact_host(self, node: str) -> str:
        """Where this machine reaches node: a local node at its listen address (loopback for a
        wildcard bind, whatever NAT does to the advertised one), a remote node at its host."""
        if not self.is_local(node):
            return self.host_of(node)
        listen = self.listen_of(node)
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen, listen)

    def peer(self, name: str) -> PeerSpec:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)

    def ports(self, nodes: Iterable[str] | None = None) -> list[tuple[str, str, int]]:
        """Return (key, listen address, port) for every port of the given nodes (all by default)."""
        wanted = set(self.node_names if nodes is None else nodes)
        out: list[tuple[str, str, int]] = []
        if MAESTRO in wanted:
            out.append(("maestro.port", self.maestro.listen, self.maestro.port))
        for i, p in enumerate(self.peers):
            if p.name in wanted:
                out.append((f"peers[{i}].rest_port", p.listen, p.rest_port))
                out.append((f"peers[{i}].grpc_port", p.listen, p.grpc_port))
                if p.lane_port is not None:
                    out.append((f"peers[{i}].lane_port", p.listen, p.lane_port))
        return out


def load(path: str | Path) -> Topology:
    """Read and validate the topology file at path; raise TopologyError listing every problem."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise TopologyError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(str(path), [f"{where}not valid YAML: {problem}"]) from None
    return parse(data, path)


def parse(data: Any, path: Path) -> Topology:
    """Validate the parsed YAML document; relative paths are relative to path's folder."""
    problems: list[str] = []
    source = str(path)
    if not isinstance(data, dict):
        raise TopologyError(source, ["the document must be a mapping with keys maestro and peers"])
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"{key}: unknown key (expected one of {', '.join(TOP_KEYS)})")

    maestro = _maestro(data, problems)
    peers = _peers(data, path.parent, problems)
    settings = _settings(data.get("settings"), problems)
    security = _security(data.get("security"), path.parent, problems)
    _check_ports(maestro, data.get("peers"), problems)

    if problems:
        raise TopologyError(source, problems)
    assert maestro is not None
    maestro = replace(maestro, tls=security.tls)
    peers = [replace(p, tls=security.tls) for p in peers]
    return Topology(path=path, maestro=maestro, peers=tuple(peers), settings=settings, security=security)


# --- converters: each reads one key, appends problems, returns a value or None ---------------


def _require(mapping: dict, key: str, prefix: str, problems: list[str]) -> Any:
    if key not in mapping or mapping[key] is None:
        problems.append(f"{prefix}{key}: missing key")
        return None
    return mapping[key]


def _port(mapping: dict, key: str, prefix: str, problems: list[str]) -> int | None:
    value = _require(mapping, key, prefix, problems)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{prefix}{key}: {value!r} is not an integer port")
        return None
    if not 1 <= value <= 65535:
        problems.append(f"{prefix}{key}: {value} is out of range (1-65535)")
        return None
    return value


def _host(mapping: dict, key: str, prefix: str, problems: list[str], optional: bool = False) -> str | None:
    if optional and mapping.get(key) is None:
        return None
    value = _require(mapping, key, prefix, problems)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        problems.append(f"{prefix}{key}: {value!r} is not a host name or address")
        return None
    return value


def _unknown_keys(mapping: dict, allowed: tuple[str, ...], prefix: str, problems: list[str]) -> None:
    for key in mapping:
        if key not in allowed:
            problems.append(f"{prefix}{key}: unknown key (expected one of {', '.join(allowed)})")


def _maestro(data: dict, problems: list[str]) -> MaestroSpec | None:
    raw = _require(data, "maestro", "", problems)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("maestro: must be a mapping with keys host and port")
        return None
    _unknown_keys(raw, MAESTRO_KEYS, "maestro.", problems)
    host = _host(raw, "host", "maestro.", problems)
    bind = _host(raw, "bind", "maestro.", problems, optional=True)
    port = _port(raw, "port", "maestro.", problems)
    if host is None or port is None:
        return None
    return MaestroSpec(host=host, port=port, bind=bind)


def _peers(data: dict, folder: Path, problems: list[str]) -> list[PeerSpec]:
    raw = _require(data, "peers", "", problems)
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        problems.append("peers: must be a non-empty list of peers")
        return []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            names.setdefault(item["name"], i)
    peers: list[PeerSpec] = []
    for i, item in enumerate(raw):
        peer = _peer(item, i, folder, names, problems)
        if peer is not None:
            peers.append(peer)
    return peers


def _peer(item: Any, i: int, folder: Path, names: dict[str, int], problems: list[str]) -> PeerSpec | None:
    prefix = f"peers[{i}]."
    if not isinstance(item, dict):
        problems.append(f"peers[{i}]: must be a mapping with keys {', '.join(PEER_KEYS)}")
        return None
    _unknown_keys(item, PEER_KEYS, prefix, problems)

    name = _require(item, "name", prefix, problems)
    if name is not None:
        if (problem := peer_name_problem(name)) is not None:
            problems.append(f"{prefix}name: {problem}")
            name = None
        elif name == MAESTRO:
            problems.append(f"{prefix}name: 'maestro' is reserved for the Maestro")
            name = None
        elif names.get(name) != i:
            problems.append(f"{prefix}name: {name!r} is already used by peers[{names[name]}].name")
    host = _host(item, "host", prefix, problems)
    bind = _host(item, "bind", prefix, problems, optional=True)
    rest_port = _port(item, "rest_port", prefix, problems)
    grpc_port = _port(item, "grpc_port", prefix, problems)
    lane_port = _port(item, "lane_port", prefix, problems) if item.get("lane_port") is not None else None

    shared_dir = _require(item, "shared_dir", prefix, problems)
    if shared_dir is not None and (not isinstance(shared_dir, str) or not shared_dir.strip()):
        problems.append(f"{prefix}shared_dir: {shared_dir!r} is not a path")
        shared_dir = None

    friends: dict[str, str | None] = {}
    raw_friends = _require(item, "friends", prefix, problems)
    if raw_friends is not None and not isinstance(raw_friends, dict):
        problems.append(f"{prefix}friends: must be a mapping with keys primary and backup")
    elif raw_friends is not None:
        _unknown_keys(raw_friends, FRIEND_ROLES, f"{prefix}friends.", problems)
        for role in FRIEND_ROLES:
            friend = _require(raw_friends, role, f"{prefix}friends.", problems)
            key = f"{prefix}friends.{role}"
            if friend is None:
                pass
            elif not isinstance(friend, str) or friend not in names:
                problems.append(f"{key}: unknown peer {friend!r}")
                friend = None
            elif friend == name:
                problems.append(f"{key}: a peer cannot be its own friend")
                friend = None
            friends[role] = friend
        if friends.get("primary") and friends.get("primary") == friends.get("backup"):
            problems.append(f"{prefix}friends.backup: {friends['backup']!r} is already the primary friend")

    primary, backup = friends.get("primary"), friends.get("backup")
    if name is None or host is None or rest_port is None or grpc_port is None or shared_dir is None:
        return None
    if primary is None or backup is None:
        return None
    shared = Path(shared_dir).expanduser()
    shared = shared if shared.is_absolute() else folder / shared
    return PeerSpec(
        name=name,
        host=host,
        rest_port=rest_port,
        grpc_port=grpc_port,
        shared_dir=Path(os.path.normpath(shared)),
        primary=primary,
        backup=backup,
        bind=bind,
        lane_port=lane_port,
    )


def _settings(raw: Any, problems: list[str]) -> Settings:
    if raw is None:
        return Settings()
    if not isinstance(raw, dict):
        problems.append("settings: must be a mapping of setting: value")
        return Settings()
    defaults = {f.name: f.default for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in defaults:
            problems.append(f"settings.{key}: unknown setting (known: {', '.join(sorted(defaults))})")
            continue
        default = defaults[key]
        if key in SETTING_CHOICES:
            if value not in SETTING_CHOICES[key]:
                problems.append(f"settings.{key}: {value!r} is not one of {', '.join(SETTING_CHOICES[key])}")
            else:
                values[key] = value
            continue
        if isinstance(default, bool):
            if isinstance(value, bool):
                values[key] = value
            else:
                problems.append(f"settings.{key}: {value!r} is not true or false")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"settings.{key}: {value!r} is not a number")
            continue
        if isinstance(default, int) and not isinstance(value, int):
            problems.append(f"settings.{key}: {value!r} is not an integer")
            continue
        if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
            problems.append(f"settings.{key}: {value!r} must be positive")
            continue
        values[key] = float(value) if isinstance(default, float) else value
    settings = Settings(**values)
    if settings.heartbeat_interval > settings.max_heartbeat_interval:
        problems.append(
            f"settings.heartbeat_interval: {settings.heartbeat_interval:g} is above "
            f"settings.max_heartbeat_interval ({settings.max_heartbeat_interval:g}): the Maestro would refuse it"
        )
    return settings


def _security(raw: Any, folder: Path, problems: list[str]) -> SecuritySpec:
    default = SecuritySpec(secret_file=secret_path(folder))
    if raw is None:
        return default
    if not isinstance(raw, dict):
        problems.append(f"security: must be a mapping with keys {', '.join(SECURITY_KEYS)}")
        return default
    _unknown_keys(raw, SECURITY_KEYS, "security.", problems)
    values: dict[str, Any] = {}
    secret_file = raw.get("secret_file")
    if secret_file is not None:
        if isinstance(secret_file, str) and secret_file.strip():
            values["secret_file"] = Path(os.path.normpath(secret_path(folder, secret_file)))
        else:
            problems.append(f"security.secret_file: {secret_file!r} is not a path")
    for key, (convert, what) in SECURITY_LISTS.items():
        items = raw.get(key)
        if items is None:
            continue
        if isinstance(items, list):
            values[key] = tuple(convert(items, problems))
        else:
            problems.append(f"security.{key}: must be a list of {what} (or [])")
    for key, choices in SECURITY_CHOICES.items():
        value = raw.get(key)
        if value is None:
            continue
        if value in choices:
            values[key] = value
        else:
            problems.append(f"security.{key}: {value!r} is not one of {', '.join(choices)}")
    for flag in SECURITY_FLAGS:
        value = raw.get(flag)
        if value is None:
            continue
        if isinstance(value, bool):
            values[flag] = value
        else:
            problems.append(f"security.{flag}: {value!r} is not true or false")
    return replace(default, **values)


def _networks(raw: list, problems: list[str]) -> list[str]:
    networks = []
    for i, value in enumerate(raw):
        key = f"security.trusted_networks[{i}]"
        if not isinstance(value, str):
            problems.append(f"{key}: {value!r} is not a network like 10.0.0.0/8")
            continue
        try:
            networks.append(str(ipaddress.ip_network(value, strict=True)))
        except (TypeError, ValueError) as err:
            problems.append(f"{key}: {value!r} is not a network ({err})")
    return networks


def _host_names(raw: list, problems: list[str]) -> list[str]:
    names: list[str] = []
    for i, value in enumerate(raw):
        try:
            if not isinstance(value, str):
                raise ValueError("not a host name")
            name = check_host_name(value)
        except ValueError as err:
            problems.append(f"security.allowed_hosts[{i}]: {value!r}: {err}")
            continue
        if name not in names:
            names.append(name)
    return names


# the section's list keys: how each item is checked, and what the list holds (for the problem's line)
SECURITY_LISTS = {
    "trusted_networks": (_networks, "networks like 127.0.0.0/8"),
    "allowed_hosts": (_host_names, "host names like maestro.example.org"),
}
SECURITY_CHOICES = {"read": READ_MODES, "local_operator": LOCAL_OPERATOR_MODES}  # the section's word keys


def _check_ports(maestro: MaestroSpec | None, raw_peers: Any, problems: list[str]) -> None:
    """Report every port used twice on one host, across the Maestro and all peers, REST and gRPC.

    Nodes on different hosts may use the same port (each VM's peer on 9001, say).
    """
    seen: dict[tuple[Any, int], str] = {}

    def claim(key: str, host: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            return  # already reported by the converter
        if (host, value) in seen:
            problems.append(f"{key}: {value} is already used by {seen[host, value]}")
        else:
            seen[host, value] = key

    if maestro is not None:
        claim("maestro.port", maestro.host, maestro.port)
    if isinstance(raw_peers, list):
        for i, item in enumerate(raw_peers):
            if isinstance(item, dict):
                host = item.get("host") if isinstance(item.get("host"), str) else None
                claim(f"peers[{i}].rest_port", host, item.get("rest_port"))
                claim(f"peers[{i}].grpc_port", host, item.get("grpc_port"))
                if item.get("lane_port") is not None:
                    claim(f"peers[{i}].lane_port", host, item.get("lane_port"))


# --- ports in use (checked at `up`, not by `validate`) ---------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """Return True when something on this machine holds host:port (a bind test).

    An address that is not on this machine holds nothing here: `unbindable` reports those.
    """
    code = bind_errno(host, port)
    if code in (errno.EADDRINUSE, errno.EACCES):
        return True
    if code in (0, errno.EADDRNOTAVAIL):
        return False
    raise OSError(code, os.strerror(code), f"{host}:{port}")


def ports_in_use(topology: Topology, nodes: Iterable[str] | None = None) -> list[str]:
    """One problem line per port of the given nodes that is already bound on this machine."""
    return [
        f"{key}: {host}:{port} is already in use"
        for key, host, port in topology.ports(nodes)
        if port_in_use(host, port)
    ]


def unusable_shared_dirs(topology: Topology) -> list[str]:
    """One problem line per shared_dir that exists but is not a folder."""
    return [
        f"peers[{i}].shared_dir: {peer.shared_dir} exists and is not a folder"
        for i, peer in enumerate(topology.peers)
        if topology.is_local(peer.name) and peer.shared_dir.exists() and not peer.shared_dir.is_dir()
    ]


# --- which nodes run here (docs/operations.md) ------------------------------------------------------------


def on_this_host(topology: Topology, host: str = AUTO, *, require: bool = True) -> Topology:
    """The topology with the nodes this machine runs marked local (`up --host auto|ADDR`).

    auto: the nodes whose address (host, or a specific bind) is on this machine; ADDR: the nodes
    whose host is ADDR. When every node is local the network is a single-machine one, as before.
    Raise TopologyError when no node is selected (unless require is false: then every node is remote).
    """
    local: set[str] = set()
    for node in topology.node_names:
        if host == AUTO:
            listen = topology.listen_of(node)
            addresses = [topology.host_of(node)] + ([] if listen in WILDCARDS else [listen])
            if any(is_local_address(a) for a in addresses):
                local.add(node)
        elif topology.host_of(node) == host:
            local.add(node)
    if not local and not require:
        return replace(topology, local=frozenset(), host_label=host if host != AUTO else "none")
    if not local:
        hosts = ", ".join(sorted({topology.host_of(n) for n in topology.node_names}))
        why = "has an address on this machine" if host == AUTO else f"has host {host}"
        raise TopologyError(
            str(topology.path),
            [
                f"no node {why} (hosts: {hosts}): run `launcher.py up` on one of those hosts, "
                "or pass --host ADDR (behind NAT: the address the nodes advertise)"
            ],
        )
    if local == set(topology.node_names):
        return topology
    label = host if host != AUTO else "+".join(sorted({topology.host_of(n) for n in local}))
    return replace(topology, local=frozenset(local), host_label=label)


def unbindable(topology: Topology) -> list[str]:
    """One problem line per local node whose listen address is not on this machine."""
    problems = []
    for node in topology.local_names:
        spec = topology.maestro if node == MAESTRO else topology.peer(node)
        if not is_local_address(spec.listen):
            key = f"{topology.key(node)}.{'bind' if spec.bind else 'host'}"
            problems.append(
                f"{key}: {spec.listen} is not an address of this machine: run `launcher.py up` on that host "
                f"(behind NAT: set {topology.key(node)}.bind, e.g. 0.0.0.0)"
            )
    return problems
