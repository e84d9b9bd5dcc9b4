"""The p2pnet command line: `python -m peer_app.client [--maestro URL] COMMAND` (SPEC §7).

Exit 0 on success; otherwise one line on stderr and the error's exit code (SPEC §10).
The top of the download path: this parses the command, asks the Maestro (client/api.py)
who holds the file and hands the holders to client/download.py.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import click

from client.api import Maestro, Peer
from client.credentials import NONE, Credentials
from client.download import MAX_SOURCES, PIECE_SIZE, STALL_TIMEOUT
from client.download import download as fetch
from client.retry import RETRY_FOR
from client.topology import client_credentials
from common.config import TOPOLOGY_ENV
from common.errors import AlreadyExists, Forbidden, NotFound, P2PError, Unauthorized
from common.malloc import tune_malloc
from common.security import NOT_A_MEMBER, TOKEN_ENV

if TYPE_CHECKING:  # grpc is imported only by the commands that speak it
    from client.transfer import TransferClient

EXIT_FAILURE = 1  # SPEC §10: any failure that is not a P2PError with its own code
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG_NAME = "python -m peer_app.client"


@dataclass
class Context:
    maestro_url: str
    timeout: float
    as_json: bool
    retry_for: float = RETRY_FOR
    credentials: Credentials = NONE

    @property
    def maestro(self) -> Maestro:
        return Maestro(self.maestro_url, self.timeout, self.credentials)

    def peer(self, url: str) -> Peer:
        return Peer(url, self.timeout, self.credentials)

    def transfer(self, address: str) -> TransferClient:
        from client.transfer import TransferClient  # grpc: only for the commands that speak it

        return TransferClient(address, retry_for=self.retry_for, credentials=self.credentials)

    def resolve_peer(self, peer: str) -> dict:
        """A peer given as REST URL or as name -> {"name", "grpc_address", "rest_url"}."""
        if peer.startswith(("http://", "https://")):
            with refused(peer, "lookup"):
                info = self.peer(peer).info()
            return {"name": info["name"], "grpc_address": info["grpc_address"], "rest_url": info["rest_url"]}
        with refused("the Maestro", "lookup"):
            known_peers = self.maestro.peers()
        for known in known_peers:
            if known["name"] == peer:
                return known
        raise NotFound(f"the Maestro knows no peer named {peer!r}; pass its REST URL instead")

    def emit(self, data: dict, human: str) -> None:
        click.echo(json.dumps(data, indent=2) if self.as_json else human)


@contextmanager
def refused(who: str, what: str):
    """Say who refused what, in the user's words, when the network does not take our credential."""
    try:
        yield
    except Unauthorized:
        raise Unauthorized(
            f"{who} refused the {what}: {NOT_A_MEMBER}; pass --token or run from the network's folder"
        ) from None
    except Forbidden as err:
        raise Forbidden(f"{who} refused the {what}: {err.detail}") from None


@contextmanager
def progress_bar(length: int, label: str):
    """A progress bar on a terminal; silence otherwise. Yields an update(n) callable."""
    if not sys.stdout.isatty():
        yield None
        return
    with click.progressbar(length=length or None, label=label, show_pos=True, width=30) as bar:  # type: ignore[var-annotated]
        yield bar.update


def _holder_line(p: dict) -> str:
    return f"  {p['name']}  grpc={p['grpc_address']}  size={p.get('size', '?')}  sha256={p.get('sha256', '')[:12]}"


@click.group()
@click.option(
    "--maestro",
    "maestro_url",
    default="http://127.0.0.1:9000",
    envvar="P2P_MAESTRO",
    show_envvar=True,
    show_default=True,
    help="The Maestro's URL.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds for each REST call.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=RETRY_FOR,
    show_default=True,
    metavar="SECONDS",
    help="Keep retrying busy or unreachable peers this long (growing pauses) before giving up.",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    metavar="TOKEN",
    help="Your credential for the network (default: the operator's, from the topology's secret file).",
)
@click.option(
    "--topology",
    "topology_path",
    envvar=TOPOLOGY_ENV,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The network's topology, for its secret and TLS CA (default: ./topology.yaml).",
)
@click.pass_context
def cli(
    ctx, maestro_url: str, timeout: float, as_json: bool, retry_for: float, token: str | None, topology_path: str | None
) -> None:
    """Find, fetch and share files on a p2pnet network.

    Outside the network's trusted addresses (loopback by default) every change needs the
    operator's token: --token, $P2P_TOKEN, or the secret file of the topology found.
    """
    ctx.obj = Context(maestro_url.rstrip("/"), timeout, as_json, retry_for, client_credentials(token, topology_path))


@cli.command()
@click.argument("name")
@click.option("--via-peer", metavar="URL", help="Discover through this peer's friends instead of the Maestro.")
@click.pass_obj
def locate(obj: Context, name: str, via_peer: str | None) -> None:
    """Show which peers hold NAME."""
    with refused(via_peer or "the Maestro", "locate"):
        answer = obj.peer(via_peer).locate(name) if via_peer else obj.maestro.locate(name)
    obj.emit(answer, "\n".join([f"{name}:"] + [_holder_line(p) for p in answer["peers"]]))


@cli.command()
@click.argument("query")
@click.option("--peer", "peer_url", required=True, metavar="URL", help="Peer that starts the search.")
@click.option("--fanout", type=click.IntRange(min=0), default=None, help="Peers asked per hop.")
@click.option("--ttl", type=click.IntRange(min=0), default=None, help="Hops the query may travel.")
@click.pass_obj
def search(obj: Context, query: str, peer_url: str, fanout: int | None, ttl: int | None) -> None:
    """Flood-search the network for names containing QUERY."""
    params = {k: v for k, v in (("fanout", fanout), ("ttl", ttl)) if v is not None}
    with refused(peer_url, "search"):
        answer = obj.peer(peer_url).search(query, **params)
    lines = [
        f"{len(answer['results'])} result(s) for {query!r} "
        f"({len(answer['visited'])} peers, {answer['messages']} messages):"
    ]
    lines += [f"  {r['file']}  on {r['peer']}  grpc={r['grpc_address']}  size={r['size']}" for r in answer["results"]]
    obj.emit(answer, "\n".join(lines))


def _holders(obj: Context, name: str, source: str | None, via_peer: str | None) -> tuple[list[dict], str, int | None]:
    """Holders of one content of name, with its expected sha256 and size ("" / None: ask the holder)."""
    if source:
        return [obj.resolve_peer(source)], "", None
    with refused(via_peer or "the Maestro", "locate"):
        answer = obj.peer(via_peer).locate(name) if via_peer else obj.maestro.locate(name)
    peers = answer["peers"]
    by_content: dict[tuple[str, int | None], list[dict]] = {}
    for peer in peers:
        by_content.setdefault((peer.get("sha256") or "", peer.get("size")), []).append(peer)
    known = {k: v for k, v in by_content.items() if k[0]}
    if not known:
        return peers, "", None
    (sha, size), holders = max(known.items(), key=lambda kv: len(kv[1]))  # most holders; the first on a tie
    return holders, sha, size


@cli.command()
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to write it (default: ./NAME).")
@click.option("--from", "source", metavar="PEER", help="Fetch from this peer only (REST URL or name).")
@click.option("--via-peer", metavar="URL", help="Locate through this peer instead of the Maestro.")
@click.option("--overwrite", is_flag=True, help="Replace an existing local file.")
@click.option(
    "--sources",
    type=click.IntRange(1, 16),
    default=MAX_SOURCES,
    show_default=True,
    help="Holders of the same content to fetch from in parallel.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0.1),
    default=STALL_TIMEOUT,
    show_default=True,
    help="Seconds without a byte before a holder is given up for another.",
)
@click.option(
    "--piece-size",
    type=click.IntRange(min=64 * 1024),
    default=PIECE_SIZE,
    hidden=True,
    help="Bytes per ranged request (the unit of resume and failover).",
)
@click.option(
    "--no-lane",
    "no_lane",
    is_flag=True,
    help="Fetch over the gRPC Download stream only, verifying sha256 (no fast lane).",
)
@click.pass_obj
def download(
    obj: Context,
    name: str,
    out: str | None,
    source: str | None,
    via_peer: str | None,
    overwrite: bool,
    sources: int,
    stall_timeout: float,
    piece_size: int,
    no_lane: bool,
) -> None:
    """Locate NAME, fetch it from its holders at once, verify it.

    The bytes come over each holder's fast lane (a one-time ticket asked for over
    gRPC, then sendfile on a plain TCP connection, verified with BLAKE3) or, where a
    lane cannot connect or with --no-lane, over the gRPC Download stream (verified
    with sha256). A cut download keeps what arrived beside the target (a hidden
    .NAME.p2p-part-* file); running the same command again continues it, from any holder.
    """
    out = out or os.path.join(os.getcwd(), name)
    holders, sha, size = _holders(obj, name, source, via_peer)
    with progress_bar(size or 0, name) as update, refused(", ".join(h["name"] for h in holders), "download"):
        result = fetch(
            name,
            out,
            holders,
            expected_sha256=sha,
            size=size,
            overwrite=overwrite,
            max_sources=sources,
            stall_timeout=stall_timeout,
            piece_size=piece_size,
            progress=update,
            lanes=not no_lane,
            retry_for=obj.retry_for,
            credentials=obj.credentials,
        )
    names = ", ".join(result.sources) or "local partial file"
    resumed = f", resumed after {result.resumed} bytes" if result.resumed else ""
    obj.emit(
        {
            "file": name,
            "path": str(result.path),
            "size": result.size,
            "sha256": result.sha256,
            "from": list(result.sources),
            "bytes_from": result.sources,
            "resumed": result.resumed,
            "seconds": round(result.seconds, 3),
            "verified": result.verified,
            "lane_bytes": result.lane_bytes,
            "lane_off": result.lane_off,
        },
        f"downloaded {name} ({result.size} bytes) from {names} to {result.path}{resumed}",
    )


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "target", required=True, metavar="PEER", help="Peer's REST URL or name.")
@click.option("--name", help="Name to store it under (default: the file's name).")
@click.option("--overwrite", is_flag=True, help="Replace a file of that name on the peer.")
@click.pass_obj
def upload(obj: Context, path: str, target: str, name: str | None, overwrite: bool) -> None:
    """Send the local file PATH to a peer's shared folder."""
    peer = obj.resolve_peer(target)
    name = name or os.path.basename(path)
    with obj.transfer(peer["grpc_address"]) as t, progress_bar(os.path.getsize(path), name) as update:
        with refused(peer["name"], "upload"):
            status = t.upload(path, name, overwrite=overwrite, progress=update)
    obj.emit(
        {"file": status.filename, "size": status.size, "sha256": status.sha256, "to": peer["name"]},
        f"uploaded {status.filename} ({status.size} bytes) to {peer['name']}",
    )


@cli.command("dummy-download")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="PEER", help="Peer's REST URL or name.")
@click.option("--size", type=click.IntRange(min=0), default=0, help="Bytes to ask for (default: the file's size).")
@click.pass_obj
def dummy_download(obj: Context, name: str, source: str, size: int) -> None:
    """ECO/DUMMY: stream NAME's bytes from a peer and drop them."""
    peer = obj.resolve_peer(source)
    with obj.transfer(peer["grpc_address"]) as t, progress_bar(size, name) as update:
        with refused(peer["name"], "dummy-download"):
            received = t.dummy_download(name, size, progress=update)
    obj.emit(
        {"file": name, "received": received, "from": peer["name"]},
        f"dummy-download {name}: {received} bytes from {peer['name']}",
    )


@cli.command("dummy-upload")
@click.option("--to", "target", required=True, metavar="PEER", help="Peer's REST URL or name.")
@click.option("--size", type=click.IntRange(min=0), required=True, help="Bytes to send.")
@click.pass_obj
def dummy_upload(obj: Context, target: str, size: int) -> None:
    """ECO/DUMMY: send SIZE bytes to a peer, which drops them."""
    peer = obj.resolve_peer(target)
    with obj.transfer(peer["grpc_address"]) as t, progress_bar(size, "dummy") as update:
        with refused(peer["name"], "dummy-upload"):
            status = t.dummy_upload(size, progress=update)
    obj.emit(
        {"sent": size, "received": status.size, "to": peer["name"]},
        f"dummy-upload: {status.size} bytes received by {peer['name']}",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to one line on stderr and an exit code."""
    tune_malloc()
    try:
        result = cli.main(args=argv, prog_name=PROG_NAME, standalone_mode=False)
    except click.UsageError as err:
        click.echo(f"error: {err.format_message()}", err=True)
        return EXIT_USAGE
    except AlreadyExists as err:  # the library does not know our flags; we do
        click.echo(f"error: {err.detail}; pass --overwrite to replace it", err=True)
        return err.exit_code
    except P2PError as err:
        click.echo(f"error: {err.detail}", err=True)
        return err.exit_code
    except OSError as err:
        click.echo(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), err=True)
        return EXIT_FAILURE
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0


def run() -> NoReturn:
    """The command line's entry point: main(), then exit at once with its code.

    Once the command's output is flushed nothing is left to do, so the interpreter's teardown
    (grpc's shutdown, every module's objects and threads) is skipped: about 0.1 s of every
    command's start-to-exit time on this machine. Tests call main(), which returns.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`| head`): nothing more can be said
        code = code or EXIT_FAILURE
    os._exit(code)


if __name__ == "__main__":
    run()
