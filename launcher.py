"""p2pnet launcher: bring a topology's network up and down, inspect it, drill failures.

Every command reads a topology (default topology.yaml), validates it, and talks to that
network's own supervisord through the socket in the run folder `.run/<topology>/` beside it.
With nodes on several hosts, each host runs its own nodes (`--host auto`: those whose address
is on this machine) under its own supervisord and run folder `.run/<topology>@<host>/`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from common.config import DEFAULT_TOPOLOGY, TOPOLOGY_ENV
from common.security import SecretError, ensure_secret, operator_token, peer_token, read_secret
from control import topology as topo
from control.errors import LauncherError, TopologyError, UnknownNode
from control.network import Network
from control.status import crash_lines, network_report, urls_table

TOPOLOGY_HELP = "topology file (default: topology.yaml)"


class LauncherGroup(click.Group):
    """A click group that maps every LauncherError to its lines on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LauncherError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a file or folder the launcher could not write or read
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


def _network(path: str, host: str = topo.AUTO, require: bool = True) -> Network:
    """The network of the topology at path, as this machine (or --host) runs it."""
    placed = topo.on_this_host(topo.load(path), host, require=require)
    return Network(placed, echo=lambda s: click.echo(s, err=True))


@click.group(cls=LauncherGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run a p2pnet network (Maestro + peers) described by a topology file under supervisord."""


def topology_argument(command: Callable) -> Callable:
    """TOPOLOGY as a positional argument (docs/api.md), or as -t/--topology (and $P2P_TOPOLOGY) like every command."""

    @functools.wraps(command)
    def with_topology(*args, topology_arg: str | None, topology_opt: str | None, **kwargs):
        ctx = click.get_current_context()
        typed = ctx.get_parameter_source("topology_opt") == ParameterSource.COMMANDLINE
        if topology_arg and topology_opt and typed and topology_arg != topology_opt:
            raise click.UsageError(f"two topologies given: {topology_arg} and -t {topology_opt}; pass one")
        return command(*args, topology=topology_arg or topology_opt or DEFAULT_TOPOLOGY, **kwargs)

    with_topology = click.argument(
        "topology_arg", metavar="[TOPOLOGY]", required=False, type=click.Path(dir_okay=False)
    )(with_topology)
    return click.option(
        "-t",
        "--topology",
        "topology_opt",
        envvar="P2P_TOPOLOGY",
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help=TOPOLOGY_HELP + "; same as the positional TOPOLOGY",
    )(with_topology)


topology_option = click.option(
    "-t",
    "--topology",
    default=DEFAULT_TOPOLOGY,
    show_default=True,
    envvar=TOPOLOGY_ENV,
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help=TOPOLOGY_HELP,
)
host_option = click.option(
    "--host",
    default=topo.AUTO,
    show_default=True,
    envvar="P2P_HOST",
    show_envvar=True,
    help="which nodes run on this machine: auto (those whose address is on this machine) or ADDR "
    "(those whose host is ADDR, e.g. a public address behind NAT); the others are remote",
)
timeout_option = click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    envvar="P2P_UP_TIMEOUT",
    show_envvar=True,
    help="seconds to wait for health",
)


@cli.command()
@topology_argument
def validate(topology: str) -> None:
    """Check TOPOLOGY and print one line per problem (ports in use are checked by `up`)."""
    t = topo.load(topology)
    click.echo(f"{t.path}: ok: maestro + {len(t.peers)} peer(s)")


@cli.command()
@topology_argument
@click.option("--peer", metavar="NAME", help="Print this peer's own credential instead (to debug a node).")
def token(topology: str, peer: str | None) -> None:
    """Print the operator's token for TOPOLOGY's network (its secret file is created if missing).

    From a machine outside security.trusted_networks:
    `P2P_TOKEN=$(python launcher.py token) python -m peer_app.client upload ...`
    """
    t = topo.load(topology)
    if peer is not None and peer not in [p.name for p in t.peers]:
        raise UnknownNode(f"unknown peer {peer!r}: the topology has {', '.join(p.name for p in t.peers)}")
    try:
        ensure_secret(t.security.secret_file)
        secret = read_secret(t.security.secret_file)
    except (SecretError, OSError) as err:
        raise TopologyError(str(t.path), [f"security.secret_file: {err}"]) from None
    click.echo(peer_token(secret, peer) if peer else operator_token(secret))


@cli.command(name="render")
@topology_argument
@host_option
@click.option(
    "--target",
    type=click.Choice(["supervisord", "compose", "kubernetes"]),
    default="supervisord",
    show_default=True,
    help="supervisord: node configs and supervisord.conf in the run folder (what `up` runs); compose: a "
    "compose file for this machine's nodes (--host picks them); kubernetes: manifests for the whole network",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="folder for the compose file or the manifests (default: the run folder's compose/ or kubernetes/)",
)
@click.option("--image", default="p2pnet:latest", show_default=True, help="the image every container runs")
@click.option("--namespace", default="p2pnet", show_default=True, help="the Kubernetes namespace")
def render_cmd(topology: str, host: str, target: str, out: str | None, image: str, namespace: str) -> None:
    """Write what runs TOPOLOGY without starting anything: supervisord's files, a compose file, or manifests.

    Compose and Kubernetes run the one image (`docker build -t p2pnet .`); see docs/kubernetes.md.
    """
    if target == "supervisord":
        net = _network(topology, host)
        net.write()
        r = net.rendered
        for path in sorted([*r.configs, *r.texts]):
            click.echo(str(path))
        return
    from control import engines
    from control.render import run_dir_for

    if target == "compose":
        t = topo.on_this_host(topo.load(topology), host)
        folder = Path(out).absolute() if out else run_dir_for(t) / target
        files = engines.render_compose(t, folder, image=image)
        _ensure_secret(t)
        for peer in t.peers:  # compose mounts each shared folder: docker would make a missing one, as root
            if t.is_local(peer.name):
                peer.shared_dir.mkdir(parents=True, exist_ok=True)
    else:
        t = topo.load(topology)
        folder = Path(out).absolute() if out else run_dir_for(t) / target
        files = engines.render_kubernetes(t, folder, _ensure_secret(t), image=image, namespace=namespace)
    for note in files.notes:
        click.echo(note, err=True)
    for path in engines.write(files):
        click.echo(str(path))


def _ensure_secret(t: topo.Topology) -> bytes:
    """The network's secret, created (0600) when missing, as `up` does."""
    try:
        ensure_secret(t.security.secret_file)
        return read_secret(t.security.secret_file)
    except (SecretError, OSError) as err:
        raise TopologyError(str(t.path), [f"security.secret_file: {err}"]) from None


@cli.command()
@topology_argument
@host_option
@timeout_option
def up(topology: str, host: str, timeout: float) -> None:
    """Start TOPOLOGY's nodes on this machine and wait until each is healthy (idempotent).

    Nodes on other hosts are never started here: run `up` on each host with the same topology.
    """
    net = _network(topology, host)
    started = time.monotonic()
    net.up(timeout=timeout)
    elapsed = time.monotonic() - started
    click.echo(urls_table(net.topology))
    remote = len(net.topology.node_names) - len(net.topology.local_names)
    click.echo(
        f"up: {len(net.topology.local_names)} node(s) healthy in {elapsed:.1f}s"
        + (f" ({remote} on other hosts)" if remote else "")
        + f"; supervisorctl -c {net.rendered.layout.conf} status"
    )


@cli.command()
@topology_argument
@host_option
def down(topology: str, host: str) -> None:
    """Stop this machine's nodes of TOPOLOGY and its supervisord; wait until no process or port is left."""
    net = _network(topology, host)
    pids = net.down()
    click.echo(f"down: {len(pids)} process(es) stopped" if pids else "down: was not running")


@cli.command()
@topology_argument
@host_option
@click.option("--all", "every", is_flag=True, help="exit code over every node, remote ones too")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(topology: str, host: str, every: bool, as_json: bool) -> None:
    """One row per node: state, pids, uptime, health, registration, file count.

    Nodes on other hosts show as REMOTE, probed over the network (REST and gRPC health, alive at
    the Maestro). Exit 0 when every node of this machine is running, healthy and registered
    (--all: every node, remote ones too); 3 when the network is not running here; 1 otherwise,
    saying which nodes are not well and why.
    """
    net = _network(topology, host, require=False)
    report = network_report(net, every=every)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.table())
    for line in crash_lines(net, report):
        click.echo(line, err=True)
    if report.exit_code:
        click.echo(report.why(topology), err=True)
        sys.exit(report.exit_code)


@cli.command()
@click.argument("node")
@topology_option
@host_option
@timeout_option
def start(node: str, topology: str, host: str, timeout: float) -> None:
    """Start NODE (maestro or a peer name) and wait until it is healthy."""
    _network(topology, host, require=False).start(node, timeout)
    click.echo(f"{node}: started")


@cli.command()
@click.argument("node")
@topology_option
@host_option
def stop(node: str, topology: str, host: str) -> None:
    """Stop NODE; supervisord keeps it down until `start`."""
    _network(topology, host, require=False).stop(node)
    click.echo(f"{node}: stopped")


@cli.command()
@click.argument("node")
@topology_option
@host_option
@timeout_option
def restart(node: str, topology: str, host: str, timeout: float) -> None:
    """Stop then start NODE, waiting until it is healthy again."""
    _network(topology, host, require=False).restart(node, timeout)
    click.echo(f"{node}: restarted")


@cli.command()
@click.argument("node")
@topology_option
@host_option
def kill(node: str, topology: str, host: str) -> None:
    """SIGKILL every process of NODE, workers included (a drill); supervisord restarts it."""
    pids = _network(topology, host, require=False).kill(node)
    click.echo(f"{node}: SIGKILL sent to process group(s) {', '.join(map(str, pids))}")


@cli.command()
@click.argument("node", required=False)
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("-n", "--lines", default=50, show_default=True, help="lines of history per log")
@topology_option
@host_option
def logs(node: str | None, follow: bool, lines: int, topology: str, host: str) -> None:
    """Print the logs of NODE (default: every node of this machine), merged in time order; -f follows.

    Each line starts with its program (`peer1-rest| `); supervisord's lines about those
    programs starting, exiting and being restarted come in as `supervisord| `.
    """
    try:
        for line in _network(topology, host, require=False).follow_logs(node, follow, lines):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--peers", "-n", "peers", type=int, required=True, help="number of peers (at least 3)")
@click.option(
    "--ring/--random",
    default=True,
    show_default=True,
    help="friends i+1 and i+2 in a ring, or two other peers at random",
)
@click.option("--seed", type=int, default=None, help="random seed for --random")
@click.option(
    "--base-port", type=int, default=None, help="Maestro on P, peers on P+1, P+2, ... (default: free ports from the OS)"
)
@click.option("--host", default="127.0.0.1", show_default=True, help="the address of every node")
@click.option(
    "--hosts",
    default=None,
    metavar="A,B,C",
    help="spread the nodes over these hosts: the Maestro on A, peer i on the i-th host in turn",
)
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    help="shared folders go to DATA_DIR/peerN, relative to the topology file",
)
@click.option("--sample-files", is_flag=True, help="put archivoN.txt in each new shared folder")
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), default="-", show_default=True, help="file to write (- for stdout)"
)
def generate(
    peers: int,
    ring: bool,
    seed: int | None,
    base_port: int | None,
    host: str,
    hosts: str | None,
    data_dir: str,
    sample_files: bool,
    out: str,
) -> None:
    """Write a valid topology of PEERS peers (validated before it is written)."""
    from control.generate import base_ports, free_ports, topology_text, write_topology
    from control.generate import generate as make

    if peers < 3:
        raise click.BadParameter(f"{peers} is too few (each peer needs two friends)", param_hint="--peers")
    ports = base_ports(base_port, peers) if base_port is not None else free_ports(1 + 2 * peers)
    host_list = [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None
    if hosts is not None and not host_list:
        raise click.BadParameter("give at least one host, e.g. 10.0.0.1,10.0.0.2", param_hint="--hosts")
    doc = make(peers, ports, ring=ring, seed=seed, host=host, hosts=host_list, data_dir=data_dir)
    target = Path(out).absolute()
    topo.parse(doc, target if out != "-" else Path("<generated topology>"))  # e.g. ports past 65535
    if out == "-":
        click.echo(topology_text(doc), nl=False)
        return
    write_topology(doc, target, sample_files=sample_files)
    click.echo(
        f"{target}: maestro + {peers} peer(s), ports {ports[0]}-{max(ports)}"
        if base_port
        else f"{target}: maestro + {peers} peer(s) on free ports"
    )


def main() -> None:
    cli(prog_name=Path(sys.argv[0]).name)


if __name__ == "__main__":
    main()
