"""The image's entrypoint: one node of a network, configured by its environment (docs/kubernetes.md).

`python -m control.container ROLE [ARGS...]`, ROLE one of:

  node     (the default) the node named by P2P_NODE: the Maestro, or both sides of a peer run in the
           foreground under a small supervisor (a side that dies stops the other: the engine restarts
           the container, as supervisord restarts a node's group)
  maestro, rest, grpc, peer    one side (a Kubernetes pod runs a peer's rest and grpc containers)
  health [rest|grpc]   exit 0 when this container's node answers GET /health and, for a peer, gRPC health
  pause    hold the network namespace that the nodes of one compose project share, until SIGTERM
  p2p ARGS, launcher ARGS      the client, the launcher; anything else runs as given

Which node, from the environment:
  P2P_CONFIG      a rendered node config: a path, or the JSON itself; else
  P2P_TOPOLOGY    the topology (default /etc/p2pnet/topology.yaml, mounted read-only: nothing is
                  written beside it) and P2P_NODE, the node's name
  P2P_STATE_DIR   where the run folder goes (default /var/lib/p2pnet: a volume)
  P2P_ALLOWED_HOSTS  extra names the node answers to in the Host header, comma-separated
  P2P_RUN_AS      UID:GID the servers run as when the container starts as root (default 10001:10001)

The network's secret is the file the config names (a Docker or Kubernetes secret mount), never a
variable. A container started as root (compose: its secrets are bind mounts that keep the host
file's owner and mode 0600) copies the secret to a private tmpfs for the server account, seeds
an empty shared folder from /srv/p2pnet/seed when that is mounted, and drops to P2P_RUN_AS before
any server starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from common.config import CONFIG_ENV, TOPOLOGY_ENV, NodeConfig, load_config, write_config
from control.processes import PROJECT_ROOT, node_environment, node_programs

NODE_ENV = "P2P_NODE"
STATE_ENV = "P2P_STATE_DIR"
ALLOWED_HOSTS_ENV = "P2P_ALLOWED_HOSTS"
RUN_AS_ENV = "P2P_RUN_AS"
TOPOLOGY_PATH = "/etc/p2pnet/topology.yaml"  # the topology's mount point (a ConfigMap in Kubernetes)
STATE_DIR = "/var/lib/p2pnet"  # the node's volume: run folder and, for a peer, its shared files
SHARED_DIR = f"{STATE_DIR}/shared"
SEED_DIR = "/srv/p2pnet/seed"  # compose mounts the topology's shared_dir here, read-only
PRIVATE_DIR = "/run/p2pnet"  # a tmpfs: the secret's copy for the server account
SEEDED_MARK = ".seeded"
APP_UID = 10001  # the image's server account (Dockerfile ARG P2P_UID)
STOP_GRACE = 8.0  # seconds the sides get after SIGTERM, inside Docker's 10 s and Kubernetes' 30 s
HEALTH_TIMEOUT = 3.0
ROLES = ("node", "maestro", "rest", "grpc", "peer")


class ContainerError(Exception):
    """The container cannot start its node; the message says what to set."""


# --- which node, from the environment (no side effects) ---------------------------------------------


def node_config(env: dict[str, str]) -> NodeConfig:
    """The node this container runs: P2P_CONFIG, or P2P_TOPOLOGY + P2P_NODE; run folder in P2P_STATE_DIR."""
    from control.errors import TopologyError

    extra = tuple(h.strip() for h in env.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip())
    if env.get(CONFIG_ENV):
        try:
            config = load_config(env[CONFIG_ENV])
        except (OSError, ValueError, TypeError) as err:
            raise ContainerError(f"{CONFIG_ENV}: not a node config ({err})") from None
    else:
        from control import topology as topo
        from control.render import RunLayout, node_configs

        name = env.get(NODE_ENV, "")
        path = env.get(TOPOLOGY_ENV) or TOPOLOGY_PATH
        if not Path(path).exists():
            raise ContainerError(
                f"no topology at {path}: mount one there (read-only) and set {NODE_ENV}, "
                f"or set {TOPOLOGY_ENV}, or {CONFIG_ENV} to a rendered node config"
            )
        try:
            topology = topo.load(path)
        except TopologyError as err:
            raise ContainerError("; ".join(err.lines())) from None
        if name not in topology.node_names:
            raise ContainerError(
                f"{NODE_ENV}={name!r} is not a node of {path} (nodes: {', '.join(topology.node_names)}); "
                f"set {NODE_ENV}, or {CONFIG_ENV} to a rendered config"
            )
        run_dir = Path(env.get(STATE_ENV) or STATE_DIR) / "run"
        config = node_configs(topology, RunLayout(run_dir=run_dir, socket=run_dir / "unused.sock"))[name]
    security = config.security
    hosts = tuple(dict.fromkeys((*security.allowed_hosts, *extra)))
    return replace(config, security=replace(security, allowed_hosts=hosts))


def programs_for(config: NodeConfig, role: str, config_path: str) -> dict[str, list[str]]:
    """Program name -> argv of the sides ROLE runs of this node."""
    programs = node_programs(config, config_path)
    if role == "node" or role == config.role:
        return programs
    if config.role == "peer" and role in ("rest", "grpc"):
        return {f"{config.name}-{role}": programs[f"{config.name}-{role}"]}
    raise ContainerError(f"role {role!r} does not fit {config.name}, a {config.role}: use node")


def role_config(config: NodeConfig, role: str) -> NodeConfig:
    """The config one role's processes read: with TLS, certificates of their own (two containers of a
    pod share the run folder, and must not race on one key file)."""
    if not config.security.tls:
        return config
    tls_dir = str(Path(config.run_dir) / "tls" / role)
    return replace(config, security=replace(config.security, tls_dir=tls_dir))


def run_as(env: dict[str, str]) -> tuple[int, int]:
    """P2P_RUN_AS as (uid, gid); never root."""
    text = env.get(RUN_AS_ENV) or f"{APP_UID}:{APP_UID}"
    uid_text, _, gid_text = text.partition(":")
    try:
        uid, gid = int(uid_text), int(gid_text or uid_text)
    except ValueError:
        raise ContainerError(f"{RUN_AS_ENV}={text!r}: expected UID:GID, e.g. {APP_UID}:{APP_UID}") from None
    if uid == 0 or gid == 0:
        raise ContainerError(f"{RUN_AS_ENV}={text!r}: the servers never run as root")
    return uid, gid


# --- preparing the container (the only writes) ---------------------------------------------------


def _private_secret(config: NodeConfig, uid: int, gid: int) -> NodeConfig:
    """Copy the secret (readable by root only) to the private tmpfs for the server account."""
    source = config.security.secret_file
    if not source:
        return config
    target = Path(PRIVATE_DIR) / "secret"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(target.parent, uid, gid)
    try:
        data = Path(source).read_bytes()
    except OSError as err:
        raise ContainerError(f"the network's secret {source}: {err.strerror}; mount it there") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chown(target, uid, gid)
    return replace(config, security=replace(config.security, secret_file=str(target)))


def _seed(shared: Path, seed: Path, uid: int, gid: int) -> int:
    """Copy the seed folder's files into an empty shared folder, once (a mark remembers it)."""
    mark = shared.parent / SEEDED_MARK
    if not seed.is_dir() or mark.exists():
        return 0
    copied = 0
    for entry in sorted(seed.iterdir()):
        if entry.is_file() and not entry.is_symlink() and not (shared / entry.name).exists():
            shutil.copyfile(entry, shared / entry.name)
            os.chown(shared / entry.name, uid, gid)
            copied += 1
    mark.touch()
    os.chown(mark, uid, gid)
    return copied


def prepare_as_root(config: NodeConfig, env: dict[str, str]) -> NodeConfig:
    """As root: hand the state folder, the secret and the seed files to the server account, then drop to it."""
    uid, gid = run_as(env)
    config = _private_secret(config, uid, gid)
    folders = [Path(config.run_dir).parent, Path(config.run_dir)] + (
        [Path(config.shared_dir)] if config.shared_dir else []
    )
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, gid)
    if config.role == "peer":
        copied = _seed(Path(config.shared_dir), Path(SEED_DIR), uid, gid)
        if copied:
            print(f"{config.name}: {copied} file(s) copied from {SEED_DIR} into {config.shared_dir}", flush=True)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    return config


def prepare(config: NodeConfig, role: str) -> str:
    """Make the run folder (and TLS files), write the role's config; return its path."""
    from common.security import read_secret
    from common.tls import ensure_tls

    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    if config.shared_dir:
        Path(config.shared_dir).mkdir(parents=True, exist_ok=True)
    if config.security.tls:
        ensure_tls(config.security.tls_dir, read_secret(config.security.secret_file), {config.name: config.host})
    path = Path(config.run_dir) / "config" / f"{config.name}-{role}.json"
    write_config(config, path)
    return str(path)


# --- running ---------------------------------------------------------------------------------------


def supervise(programs: dict[str, list[str]], env: dict[str, str], grace: float = STOP_GRACE) -> int:
    """Run the programs in the foreground until SIGTERM/SIGINT or until one exits; return the exit code.

    PID 1 of a container: it forwards SIGTERM, reaps every child (orphans included), and SIGKILLs
    what is still there after grace seconds. A side that exits on its own stops the other and ends
    the container with 1, so the engine's restart policy brings the whole node back.
    """
    waited = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    children: dict[int, str] = {}
    for name, argv in programs.items():
        # posix_spawn with an empty mask: the children must not inherit the blocked signals
        pid = os.posix_spawn(argv[0], argv, env, setsigmask=set(), setsigdef=waited)
        children[pid] = name
    code = 0
    deadline: float | None = None

    def stop(reason: str) -> None:
        nonlocal deadline
        if deadline is None:
            print(f"stopping ({reason})", flush=True)
            deadline = time.monotonic() + grace
            for pid in children:
                _kill(pid, signal.SIGTERM)

    while children:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout == 0.0:
            for pid in children:
                _kill(pid, signal.SIGKILL)
            timeout = None
        info = signal.sigtimedwait(waited, timeout) if timeout is not None else signal.sigwaitinfo(waited)
        if info is None:
            continue
        if info.si_signo in (signal.SIGTERM, signal.SIGINT):
            stop(signal.Signals(info.si_signo).name)
            continue
        for pid, status in _reap():
            exited = children.pop(pid, None)
            if exited is not None and deadline is None:
                print(f"{exited} exited ({_describe(status)}): stopping the node", flush=True)
                code = 1
                stop(f"{exited} exited")
    return code


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap() -> list[tuple[int, int]]:
    """Every child that has exited (ours and orphans handed to PID 1)."""
    done: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def pause() -> int:
    """Hold the shared network namespace until SIGTERM or SIGINT."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


def health(config: NodeConfig, side: str = "") -> int:
    """0 when the node answers GET /health (and, for a peer, gRPC health) here; else 1 with the reason."""
    import ssl
    import urllib.request

    contact = {"0.0.0.0": "127.0.0.1", "::": "::1", "": config.host}.get(config.bind, config.bind)
    problems = []
    if side in ("", "rest"):
        scheme = "https" if config.security.tls else "http"
        host = f"[{contact}]" if ":" in contact else contact
        context = ssl._create_unverified_context() if config.security.tls else None  # our own node, by loopback
        try:
            with urllib.request.urlopen(
                f"{scheme}://{host}:{config.rest_port}/health", timeout=HEALTH_TIMEOUT, context=context
            ) as answer:
                if answer.status != 200:
                    problems.append(f"GET /health answered {answer.status}")
        except OSError as err:
            problems.append(f"GET /health: {err}")
    if config.role == "peer" and side in ("", "grpc"):
        problem = _grpc_health(config, contact)
        if problem:
            problems.append(problem)
    for problem in problems:
        print(f"{config.name}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _grpc_health(config: NodeConfig, contact: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2

    from common.config import address
    from common.rpc import health_stub

    target = address(contact, config.grpc_port)
    if config.security.tls:
        # any role's ca.pem will do: the CA is derived from the network's secret (common/tls.py)
        cas = sorted((Path(config.run_dir) / "tls").glob("*/ca.pem"))
        if not cas:
            return "gRPC health: no CA file yet"
        credentials = grpc.ssl_channel_credentials(cas[0].read_bytes())
        channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            answer = health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        except grpc.RpcError as err:
            return f"gRPC health: {err.code().name}"
    return "" if answer.status == health_pb2.HealthCheckResponse.SERVING else "gRPC health: not serving"


def run(argv: list[str], env: dict[str, str]) -> int:
    """Do what ROLE says; exec()s the server of a one-process role (it becomes PID 1)."""
    role, args = (argv[0], argv[1:]) if argv else ("node", [])
    if role == "pause":
        return pause()
    if role == "p2p":
        os.execvpe("p2p", ["p2p", *args], env)
    if role == "launcher":
        os.execve(sys.executable, [sys.executable, str(PROJECT_ROOT / "launcher.py"), *args], env)
    if role == "health":
        config = node_config(env)
        return health(config, args[0] if args else "")
    if role not in ROLES:
        os.execvpe(role, [role, *args], env)
    config = node_config(env)
    if os.geteuid() == 0:
        config = prepare_as_root(config, env)
    config = role_config(config, role)
    path = prepare(config, role)
    programs = programs_for(config, role, path)
    child_env = {**env, **node_environment(path)}
    print(
        f"{config.name}: {', '.join(programs)} as uid {os.getuid()}; advertised as {config.rest_url}"
        + (f", gRPC {config.grpc_address}, lane port {config.lane_port or 'any'}" if config.role == "peer" else ""),
        flush=True,
    )
    if len(programs) == 1:
        [argv_one] = programs.values()
        os.chdir(PROJECT_ROOT)
        os.execve(argv_one[0], argv_one, child_env)
    os.chdir(PROJECT_ROOT)
    return supervise(programs, child_env)


def main() -> None:
    try:
        code = run(sys.argv[1:], dict(os.environ))
    except ContainerError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
