"""The p2pnet command line: `p2p [--maestro URL] COMMAND` (docs/api.md, "The client").

`pip install -r requirements.txt` installs it as the `p2p` command; `python -m peer_app.client`
runs the same program. Exit codes (docs/api.md): 0 done, 1 other failure, 2 usage, 3 not found,
4 unreachable, 5 integrity (sha256 mismatch), 6 busy after retries, 7 unauthorized, and 130
when stopped by Ctrl-C. A failure is one line on stderr that names the node, says what state
it is in and what to run next.

The top of the download path: this parses the command, asks the Maestro (client/api.py)
who holds the file and hands the holders to client/download.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from client import __version__
from client.api import Maestro, Peer
from client.download import download as fetch
from client.keys import Keys
from client.options import MAX_SOURCES, PIECE_SIZE, STALL_TIMEOUT, DownloadOptions
from client.progress import Progress, throughput
from client.retry import RETRY_FOR
from client.topology import client_keys
from common.config import TOPOLOGY_ENV
from common.errors import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    Interrupted,
    NotFound,
    P2PError,
    Unauthorized,
    Unavailable,
)
from common.malloc import tune_malloc
from common.security import NOT_A_MEMBER, TOKEN_ENV, TOKEN_FILE_ENV, loose_permissions
from common.units import format_size, parse_size

if TYPE_CHECKING:
    from client.transfer import TransferClient

EXIT_FAILURE = 1  # docs/api.md "Exit codes": any failure that is not a P2PError with its own code
EXIT_USAGE = 2
EXIT_INTERRUPTED = Interrupted.exit_code
DEFAULT_MAESTRO = "http://127.0.0.1:9000"
MAESTRO_ENV = "P2P_MAESTRO"
DUMMY_SIZE = 10 * 1024 * 1024  # dummy-download of a name the peer does not share, and no --size
UP_HINT = "is the network up? `python launcher.py up` starts it, `python launcher.py status` shows it"
STATUS_HINT = "`python launcher.py status` shows which nodes run"
T = TypeVar("T")


def prog_name() -> str:
    """What the user typed to run us, for usage lines and hints."""
    return "p2p" if os.path.basename(sys.argv[0] or "") == "p2p" else "python -m peer_app.client"


class SizeType(click.ParamType):
    """A byte count as people write it: 4096, 100MiB, 1.5GB (common.units.parse_size)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


SIZE = SizeType()
_HOST_PORT = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$")


def peer_url(peer: str) -> str | None:
    """PEER as a REST URL when it is one (http://HOST:PORT, or HOST:PORT); None when it is a name."""
    if "://" in peer:
        return peer.rstrip("/")
    if _HOST_PORT.match(peer):
        return "http://" + peer
    return None


def _reason(err: P2PError) -> str:
    """The why of a failed REST call ("connection refused"), without the URL the caller names itself."""
    detail = err.detail
    return detail.split(": ", 1)[1] if detail.startswith("cannot reach ") and ": " in detail else detail


def _label(peer: dict) -> str:
    name, url = peer.get("name"), peer.get("rest_url")
    return f"{name} ({url})" if name and url and name != url else str(name or url)


def _peer_hint(peer: dict) -> str:
    """What to run about a peer that did not answer, with what the Maestro last knew of it."""
    name = peer.get("name", "")
    if peer.get("alive") is False:
        return (
            f"the Maestro last heard from it {peer.get('age', 0):.0f}s ago; `python launcher.py start {name}` starts it"
        )
    return STATUS_HINT


@contextmanager
def refused(who: str, what: str) -> Iterator[None]:
    """Say who refused what (a noun: "upload"), in the user's words, when the network does not take our credential."""
    try:
        yield
    except Unauthorized:
        raise Unauthorized(
            f"{who} refused the {what}: {NOT_A_MEMBER}; pass --token-file or run from the network's folder"
        ) from None
    except Forbidden as err:
        raise Forbidden(f"{who} refused the {what}: {err.detail}") from None


FALLBACK_PEERS = 3  # topology peers a locate asks, in order, when the Maestro does not answer


@dataclass
class Context:
    maestro_url: str
    timeout: float
    as_json: bool
    retry_for: float = RETRY_FOR
    keys: Keys = field(default_factory=Keys)  # which credential goes where (client/keys.py)

    @property
    def maestro(self) -> Maestro:
        return Maestro(self.maestro_url, self.timeout, self.keys.read(self.maestro_url))

    def peer(self, url: str) -> Peer:
        return Peer(url, self.timeout, self.keys.read(url))

    def ask_maestro(self, action: str, what: str, ask: Callable[[Maestro], T]) -> T:
        """One call to the Maestro; an unreachable Maestro is reported with what to run."""
        try:
            with refused("the Maestro", action):
                return ask(self.maestro)
        except Unavailable as err:
            raise Unavailable(
                f"cannot {what}: the Maestro at {self.maestro_url} does not answer ({_reason(err)}); {UP_HINT}"
            ) from None

    def locate(self, name: str) -> dict:
        """The Maestro's /locate of name; when the Maestro does not answer, a P2P /locate at the topology's peers.

        The network finds files without its Maestro (docs/protocol.md): a user who has the
        topology loses nothing while the Maestro restarts, and is told which peer answered.
        """
        what = f"locate {name}"
        try:
            return self.ask_maestro("locate", what, lambda m: m.locate(name))
        except Unavailable as maestro_down:
            # a few peers at most: each asks its friends onward, and each that does not answer may cost --timeout
            for peer_name, (rest_url, grpc_address) in list(self.keys.peers.items())[:FALLBACK_PEERS]:
                peer = {"name": peer_name, "rest_url": rest_url, "grpc_address": grpc_address}
                try:
                    answer = self.ask_peer(peer, "locate", what, lambda p: p.locate(name))
                except Unavailable:
                    continue
                click.echo(f"note: the Maestro does not answer; located through {peer_name}'s friends", err=True)
                return answer
            raise maestro_down

    def ask_peer(self, peer: dict, action: str, what: str, ask: Callable[[Peer], T]) -> T:
        """One REST call to a peer; an unreachable peer is reported by name, state and what to run."""
        try:
            with refused(_label(peer), action):
                return ask(self.peer(peer["rest_url"]))
        except Unavailable as err:
            raise Unavailable(
                f"cannot {what}: {_label(peer)} does not answer ({_reason(err)}); {_peer_hint(peer)}"
            ) from None

    def find_peer(self, peer: str, *, need_grpc: bool = False) -> dict:
        """PEER as a REST URL, HOST:PORT or a name -> {"name", "rest_url", "grpc_address", ...}."""
        url = peer_url(peer)
        if url is not None:  # the user chose this node: it counts as the network's own (client/keys.py)
            self.keys = self.keys.with_own([url])
            if not need_grpc:
                return {"name": url, "rest_url": url}
            info = self.ask_peer({"name": url, "rest_url": url}, "lookup", "ask the peer who it is", lambda p: p.info())
            self.keys = self.keys.with_own([info["grpc_address"]])
            return {"name": info["name"], "rest_url": info.get("rest_url", url), "grpc_address": info["grpc_address"]}
        mine = self.keys.peers.get(peer)  # the topology's own addresses for a name it knows
        try:
            with refused("the Maestro", "lookup"):
                peers = self.maestro.peers()
        except Unavailable as err:
            if mine is not None:
                return {"name": peer, "rest_url": mine[0], "grpc_address": mine[1]}
            raise Unavailable(
                f"cannot look up the peer named {peer!r}: the Maestro at {self.maestro_url} does not answer "
                f"({_reason(err)}); pass the peer's REST URL (http://HOST:PORT) instead, or {UP_HINT}"
            ) from None
        for known in peers:
            if known["name"] == peer:
                return known if mine is None else {**known, "rest_url": mine[0], "grpc_address": mine[1]}
        if mine is not None:
            return {"name": peer, "rest_url": mine[0], "grpc_address": mine[1]}
        names = ", ".join(p["name"] for p in peers[:12]) + (", ..." if len(peers) > 12 else "")
        raise NotFound(
            f"the Maestro knows no peer named {peer!r} (registered: {names or 'none'}); "
            "pass a registered name or a peer's REST URL (http://HOST:PORT)"
        )

    def with_transfer(self, peer: dict, what: str, use: Callable[[TransferClient], T], *, write: bool = False) -> T:
        """A gRPC channel to peer for one call (a write shows the write credential); unreachable: said by name."""
        from client.transfer import TransferClient  # grpc: only for the commands that speak it

        credentials = self.keys.write(peer) if write else self.keys.read(peer["grpc_address"])
        try:
            with TransferClient(peer["grpc_address"], retry_for=self.retry_for, credentials=credentials) as t:
                with refused(peer["name"], what):
                    return use(t)
        except Unavailable as err:
            raise Unavailable(f"{peer['name']}: {err.detail}; {_peer_hint(peer)}") from None

    def emit(self, data: dict, human: str) -> None:
        click.echo(json.dumps(data, indent=2) if self.as_json else human)


def _set(attr: str, convert: Callable[[Any], Any] = lambda v: v):
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(ctx.find_object(Context), attr, convert(value))

    return callback


def common_options(command: Callable) -> Callable:
    """The group's --json, --maestro and --timeout, accepted after the command too (`locate x --json`)."""
    for option in (
        click.option("--timeout", "_timeout", type=float, expose_value=False, callback=_set("timeout"), hidden=True),
        click.option(
            "--maestro",
            "_maestro",
            metavar="URL",
            expose_value=False,
            callback=_set("maestro_url", lambda v: v.rstrip("/")),
            help="The Maestro's URL (here or before the command).",
        ),
        click.option(
            "--json",
            "_json",
            is_flag=True,
            expose_value=False,
            callback=_set("as_json"),
            help="Print machine-readable JSON (here or before the command).",
        ),
    ):
        command = option(command)
    return command


def _holder_line(p: dict) -> str:
    size = format_size(p["size"]) if isinstance(p.get("size"), int) else "?"
    return f"  {p['name']}  {p['grpc_address']}  {size}  sha256 {(p.get('sha256') or '?')[:12]}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="p2p", message="%(prog)s %(version)s")
@click.option(
    "--maestro",
    "maestro_url",
    metavar="URL",
    envvar=MAESTRO_ENV,
    show_envvar=True,
    help=f"The Maestro's URL [default: the topology's Maestro, else {DEFAULT_MAESTRO}].",
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
    "--token-file",
    envvar=TOKEN_FILE_ENV,
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="A file holding your credential (default: the operator's, from the topology's secret file).",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    metavar="TOKEN",
    help="Your credential itself: other local users see a command line (ps); prefer --token-file.",
)
@click.option(
    "--topology",
    "topology_path",
    envvar=TOPOLOGY_ENV,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The network's topology, for its Maestro, secret and TLS CA (default: ./topology.yaml).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    maestro_url: str | None,
    timeout: float,
    as_json: bool,
    retry_for: float,
    token_file: str | None,
    token: str | None,
    topology_path: str | None,
) -> None:
    """Find, fetch and share files on a p2pnet network.

    PEER is a peer's name (peer2, looked up at the Maestro) or its REST URL (http://127.0.0.1:9003).
    SIZE is bytes or a number with a unit (100MiB, 1.5GB). The Maestro is --maestro, else
    $P2P_MAESTRO, else the one of the topology found (--topology, $P2P_TOPOLOGY, ./topology.yaml),
    else http://127.0.0.1:9000. Outside the network's trusted addresses (loopback by default)
    every change needs a credential: --token-file ($P2P_TOKEN_FILE), $P2P_TOKEN, or the
    operator's, derived from the topology's secret file. Reads show only the read credential,
    and the operator's goes only to the nodes the topology names or you type.

    Exit codes: 0 done, 1 other failure, 2 usage, 3 not found, 4 unreachable, 5 integrity,
    6 busy after retries, 7 unauthorized, 130 interrupted.
    """
    from_topology, keys = client_keys(_token(ctx, token, token_file), topology_path)
    url = (maestro_url or from_topology or DEFAULT_MAESTRO).rstrip("/")
    explicit = ctx.get_parameter_source("topology_path") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ctx.obj = Context(url, timeout, as_json, retry_for, keys.for_maestro(url, from_topology, explicit))


def _token(ctx: click.Context, token: str | None, token_file: str | None) -> str | None:
    """The user's credential: --token or --token-file; given both, the one on the command line wins."""
    if token and token_file:
        on_line = {
            name for name in ("token", "token_file") if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        }
        if len(on_line) != 1:
            raise click.UsageError(f"give one of --token/${TOKEN_ENV} and --token-file/${TOKEN_FILE_ENV}, not both")
        if on_line == {"token"}:
            return token
    return read_token_file(token_file) if token_file else token or None


def read_token_file(path: str) -> str:
    """The credential in path (whitespace around it dropped); a usage error naming the file otherwise."""
    hint = "--token-file"
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror or err}", param_hint=hint) from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not a text file holding a credential", param_hint=hint) from None
    if not text or len(text.split()) != 1:
        raise click.BadParameter(f"{path} must hold one credential (`python launcher.py token`)", param_hint=hint)
    warning = loose_permissions(path, "your credential")
    if warning:
        click.echo(f"warning: {warning}", err=True)
    return text


@cli.command()
@click.argument("name")
@click.option("--via-peer", metavar="PEER", help="Discover through this peer's friends instead of the Maestro.")
@common_options
@click.pass_obj
def locate(obj: Context, name: str, via_peer: str | None) -> None:
    """Show which peers hold NAME."""
    if via_peer:
        answer = obj.ask_peer(obj.find_peer(via_peer), "locate", f"locate {name}", lambda p: p.locate(name))
    else:
        answer = obj.locate(name)
    how = f" (found through {' -> '.join(answer.get('via', []))})" if answer.get("via") else ""
    holders = answer["peers"]
    obj.emit(answer, "\n".join([f"{name}: {len(holders)} holder(s){how}"] + [_holder_line(p) for p in holders]))


@cli.command()
@click.argument("query")
@click.option("--peer", required=True, metavar="PEER", help="The peer that starts the search (name or REST URL).")
@click.option("--fanout", type=click.IntRange(min=0), default=None, help="Peers asked per hop.")
@click.option("--ttl", type=click.IntRange(min=0), default=None, help="Hops the query may travel.")
@common_options
@click.pass_obj
def search(obj: Context, query: str, peer: str, fanout: int | None, ttl: int | None) -> None:
    """Flood-search the network for names containing QUERY."""
    params = {k: v for k, v in (("fanout", fanout), ("ttl", ttl)) if v is not None}
    start = obj.find_peer(peer)
    answer = obj.ask_peer(start, "search", f"search for {query!r}", lambda p: p.search(query, **params))
    results = _listed(answer, "results", f"{_label(start)} answered the search")
    visited = [str(v) for v in _listed(answer, "visited", f"{_label(start)} answered the search", of=str)]
    lines = [
        f"{len(results)} result(s) for {query!r}; the query reached {len(visited)} peer(s)"
        f" ({', '.join(visited)}) in {answer.get('messages', 0)} message(s)"
    ]
    if answer.get("complete") is False:
        lines[0] += "; partial: some peers did not answer in time"
    lines += [_result_line(r) for r in results]
    obj.emit(answer, "\n".join(lines))


def _listed(answer: dict, key: str, who: str, of: type = dict) -> list:
    """answer[key] as a list of `of` (missing or null: an empty list); a one-line P2PError when it is something else."""
    value = answer.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, of) for v in value):
        raise P2PError(f"{who} with '{key}' that is not a list of {'objects' if of is dict else 'names'}")
    return value


def _result_line(r: dict) -> str:
    size = format_size(r["size"]) if isinstance(r.get("size"), int) else "?"
    return f"  {r.get('file', '?')}  on {r.get('peer', '?')}  {r.get('grpc_address', '?')}  {size}"


def _holders(obj: Context, name: str, source: str | None, via_peer: str | None) -> tuple[list[dict], str, int | None]:
    """Holders of one content of name, with its expected sha256 and size ("" / None: ask the holder)."""
    if source:
        return [obj.find_peer(source, need_grpc=True)], "", None
    if via_peer:
        peers = obj.ask_peer(obj.find_peer(via_peer), "locate", f"locate {name}", lambda p: p.locate(name))["peers"]
    else:
        peers = obj.locate(name)["peers"]
    by_content: dict[tuple[str, int | None], list[dict]] = {}
    for peer in peers:
        by_content.setdefault((peer.get("sha256") or "", peer.get("size")), []).append(peer)
    known = {k: v for k, v in by_content.items() if k[0]}
    if not known:
        return peers, "", None
    (sha, size), holders = max(known.items(), key=lambda kv: len(kv[1]))  # most holders; the first on a tie
    return holders, sha, size


def _sources_text(sources: dict[str, int]) -> str:
    if not sources:
        return "the partial file already here"
    if len(sources) == 1:
        return next(iter(sources))
    return ", ".join(f"{name} ({format_size(n)})" for name, n in sorted(sources.items(), key=lambda kv: -kv[1]))


@cli.command()
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to write it (default: ./NAME).")
@click.option("--from", "source", metavar="PEER", help="Fetch from this peer only (name or REST URL).")
@click.option("--via-peer", metavar="PEER", help="Locate through this peer instead of the Maestro.")
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
    "--no-lane",
    "no_lane",
    is_flag=True,
    help="Fetch over the gRPC Download stream only, verifying sha256 (no fast lane).",
)
@click.option("--piece-size", type=SIZE, default=PIECE_SIZE, hidden=True, help="Bytes per ranged request.")
@common_options
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
    no_lane: bool,
    piece_size: int,
) -> None:
    """Locate NAME, fetch it from its holders at once, verify it.

    The bytes come over each holder's fast lane (a one-time ticket asked for over gRPC, then
    sendfile on a plain TCP connection, verified with BLAKE3) or, where a lane cannot connect or
    with --no-lane, over the gRPC Download stream (verified with sha256). A cut download (Ctrl-C
    included) keeps what arrived beside the target, in a hidden .NAME.p2p-part-* file; running
    the same command again continues from there, from any holder.
    """
    if piece_size < 64 * 1024:
        raise click.BadParameter("at least 64KiB", param_hint="--piece-size")
    out = out or os.path.join(os.getcwd(), name)
    holders, sha, size = _holders(obj, name, source, via_peer)
    with Progress(name) as progress, refused(", ".join(h["name"] for h in holders), "download"):
        try:
            options = DownloadOptions(
                expected_sha256=sha,
                size=size,
                overwrite=overwrite,
                max_sources=sources,
                stall_timeout=stall_timeout,
                piece_size=piece_size,
                lanes=not no_lane,
                progress=progress.update,
                on_start=progress.start,
                retry_for=obj.retry_for,
                credentials=lambda holder: obj.keys.read(holder["grpc_address"]),
                holder_check=obj.keys.holder_check(),
            )
            result = fetch(name, out, holders, options)
        except Unavailable as err:
            hint = _peer_hint(holders[0]) if len(holders) == 1 else STATUS_HINT
            raise Unavailable(f"{err.detail}; {hint}") from None
    fetched = result.size - result.resumed
    resumed = f"; resumed at {format_size(result.resumed)}" if result.resumed else ""
    if result.duplicates:
        resumed += f"; {format_size(result.duplicates)} fetched twice (the last pieces, raced)"
    for holder, what in result.bad.items():
        resumed += f"; bad bytes from {holder}: {what}, fetched again"
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
            "duplicates": result.duplicates,
            "trouble": result.trouble,
            "bad": result.bad,
            "mb_per_s": round(fetched / result.seconds / 1e6, 1) if result.seconds > 0 else None,
        },
        f"downloaded {name}: {throughput(fetched, result.seconds)} from {_sources_text(result.sources)}"
        f"{resumed} -> {result.path}",
    )


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "target", required=True, metavar="PEER", help="The peer (name or REST URL).")
@click.option("--name", help="Name to store it under (default: the file's name).")
@click.option("--overwrite", is_flag=True, help="Replace a file of that name on the peer.")
@common_options
@click.pass_obj
def upload(obj: Context, path: str, target: str, name: str | None, overwrite: bool) -> None:
    """Send the local file PATH to a peer's shared folder."""
    peer = obj.find_peer(target, need_grpc=True)
    name = name or os.path.basename(path)
    started = time.monotonic()
    with Progress(name, os.path.getsize(path)) as progress:
        try:
            status = obj.with_transfer(
                peer,
                "upload",
                lambda t: t.upload(path, name, overwrite=overwrite, progress=progress.update),
                write=True,
            )
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: the upload to {peer['name']} was cut; nothing was stored there "
                "(a peer keeps an upload only once all of it arrived)"
            ) from None
    seconds = time.monotonic() - started
    obj.emit(
        {"file": status.filename, "size": status.size, "sha256": status.sha256, "to": peer["name"],
         "seconds": round(seconds, 3)},
        f"uploaded {status.filename}: {throughput(status.size, seconds)} to {peer['name']}",
    )  # fmt: skip


@cli.command("dummy-download")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="PEER", help="The peer (name or REST URL).")
@click.option(
    "--size",
    type=SIZE,
    default=None,
    help=f"Bytes to ask for, e.g. 100MiB (default: the size of the peer's file NAME, else {format_size(DUMMY_SIZE)}).",
)
@common_options
@click.pass_obj
def dummy_download(obj: Context, name: str, source: str, size: int | None) -> None:
    """ECO/DUMMY: stream bytes from a peer and drop them; shows the throughput."""
    peer = obj.find_peer(source, need_grpc=True)
    note = ""

    def run(transfer: TransferClient) -> int:
        nonlocal note
        with Progress(name, size) as progress:
            if size is not None:
                return transfer.dummy_download(name, size, progress=progress.update)
            try:  # as many bytes as the peer's file of that name has
                return transfer.dummy_download(name, 0, progress=progress.update)
            except BadRequest as err:
                if type(err) is not BadRequest:  # an invalid name, say: not about the size
                    raise
            note = f" (default size: {peer['name']} shares no file {name!r}; --size sets it)"
            progress.start(DUMMY_SIZE)
            return transfer.dummy_download(name, DUMMY_SIZE, progress=progress.update)

    started = time.monotonic()
    received = obj.with_transfer(peer, "dummy-download", run)
    seconds = time.monotonic() - started
    obj.emit(
        {"file": name, "received": received, "from": peer["name"], "seconds": round(seconds, 3)},
        f"dummy-download {name}: {throughput(received, seconds)} from {peer['name']}{note}",
    )


@cli.command("dummy-upload")
@click.option("--to", "target", required=True, metavar="PEER", help="The peer (name or REST URL).")
@click.option("--size", type=SIZE, required=True, help="Bytes to send, e.g. 100MiB.")
@common_options
@click.pass_obj
def dummy_upload(obj: Context, target: str, size: int) -> None:
    """ECO/DUMMY: send SIZE bytes to a peer, which drops them; shows the throughput."""
    peer = obj.find_peer(target, need_grpc=True)
    started = time.monotonic()
    with Progress("dummy", size) as progress:
        status = obj.with_transfer(
            peer, "dummy-upload", lambda t: t.dummy_upload(size, progress=progress.update), write=True
        )
    seconds = time.monotonic() - started
    obj.emit(
        {"sent": size, "received": status.size, "to": peer["name"], "seconds": round(seconds, 3)},
        f"dummy-upload: {throughput(size, seconds)} to {peer['name']}, which received {status.size} bytes",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to one line on stderr and an exit code."""
    tune_malloc()
    try:
        result = cli.main(args=argv, prog_name=prog_name(), standalone_mode=False)
    except click.UsageError as err:
        where = f" (see `{err.ctx.command_path} -h`)" if err.ctx is not None else ""
        click.echo(f"error: {err.format_message().rstrip('.')}{where}", err=True)
        return EXIT_USAGE
    except AlreadyExists as err:  # the library does not know our flags; we do
        click.echo(f"error: {err.detail}; pass --overwrite to replace it", err=True)
        return err.exit_code
    except (P2PError, Interrupted) as err:
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
