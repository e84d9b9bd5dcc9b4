"""The peer's REST routes (docs/api.md, "Peer REST"): parse, call the index or discovery, answer JSON."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Blueprint, current_app, jsonify, request

from common.config import NodeConfig
from common.credentials import Credentials
from common.errors import Busy, Forbidden, Incomplete, NotFound, P2PError
from common.metrics import Metrics
from common.names import check_name, check_peer_name
from common.security import Guard
from common.urls import check_peer_url
from common.web import arg_float, arg_int, arg_str, current_caller, json_body
from peer_app import agent
from peer_app.hoppath import caller_gone, count, search_query
from peer_app.hops import hop_fields, hop_sender
from peer_app.index import SharedIndex
from peer_app.membership import MAX_CHALLENGE, Verifier, proof_fields
from peer_app.scrub import Pace
from peer_app.search import Discovery, new_qid
from peer_app.state import KnownPeers

bp = Blueprint("peer", __name__)
log = logging.getLogger(__name__)
RECHECK_WINDOW = 30.0  # seconds: POST /recheck hashes a given file at most this often (docs: api)


def node() -> NodeConfig:
    return current_app.config["NODE"]


def index() -> SharedIndex:
    return current_app.extensions["index"]


def known() -> KnownPeers:
    return current_app.extensions["known_peers"]


def discovery() -> Discovery:
    return current_app.extensions["discovery"]


def metrics() -> Metrics:
    return current_app.extensions["metrics"]


def guard() -> Guard:
    return current_app.extensions["guard"]


def credentials() -> Credentials:
    return current_app.extensions["credentials"]


def verifier() -> Verifier:
    return current_app.extensions["verifier"]


def _sender() -> str | None:
    """The peer that sent this request, when it may carry hop fields (peer_app/hops.py)."""
    return hop_sender(guard(), request.remote_addr, request.headers.get("Authorization"))


def _status() -> dict:
    config = node()
    return {
        "status": "ok",
        "peer": config.name,
        "name": config.name,
        "rest_url": config.rest_url,
        "grpc_address": config.grpc_address,
        "maestro_url": config.maestro_url,
        "friends": {role: {"name": f.name, "url": f.rest_url} for role, f in config.friends.items()},
        "shared_dir": config.shared_dir,
        "file_count": len(index().scan()),
    }


@bp.get("/")
def status():
    return jsonify(_status())


@bp.get("/info")
def info():
    # ?challenge=C: prove membership to a peer that verifies this one (peer_app/membership.py)
    config = node()
    challenge = arg_str("challenge", required=False, max_length=MAX_CHALLENGE)
    proof = proof_fields(guard(), config.name, config.rest_url, challenge)
    return jsonify({**_status(), **proof})


@bp.get("/membership")
def membership():
    """This peer's proof of membership, for a peer verifying its URL (peer_app/membership.py).

    Open to anyone whatever `read` says: the verifier is asked to present no credential to an address
    it has not verified yet, and the answer shows only who this peer is, never its files or friends.
    """
    config = node()
    challenge = arg_str("challenge", max_length=MAX_CHALLENGE)
    me = {"name": config.name, "rest_url": config.rest_url, "grpc_address": config.grpc_address}
    return jsonify({**me, **proof_fields(guard(), config.name, config.rest_url, challenge)})


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "peer": node().name})


@bp.get("/files")
def files():
    listed = [f.to_json() for f in index().scan()]
    return jsonify({"peer": node().name, "files": listed, "count": len(listed)})


@bp.get("/search")
def search():
    settings = node().settings
    exact = arg_str("file", required=False, max_length=settings.max_query_length)
    if exact is not None:
        exact = check_name(exact)
        found = [f.to_json() for f in index().scan() if f.name == exact]
        return jsonify({"peer": node().name, "file": exact, "found": bool(found), "results": found})
    query = search_query(request.args, settings, _sender(), caller_gone(request.environ))
    answer = discovery().search(query)
    count(metrics(), answer)
    return jsonify({"query": query.text, **answer})


@bp.get("/locate")
def locate():
    settings = node().settings
    name = check_name(arg_str("file", max_length=settings.max_query_length))
    hop = hop_fields(request.args, _sender())
    try:
        answer = discovery().locate(
            name,
            qid=hop.qid or new_qid(),
            reached=list(hop.reached),
            hop=hop.sender is not None,
            ttl=arg_int("ttl", default=settings.search_default_ttl, minimum=1, maximum=settings.search_max_ttl),
            budget=arg_float("budget", default=settings.locate_timeout, maximum=settings.locate_timeout),
        )
    except NotFound:
        metrics().locate_handled.labels("not_found").inc()
        raise
    except Incomplete:
        metrics().locate_handled.labels("incomplete").inc()
        raise
    except Busy:
        metrics().locate_handled.labels("shed").inc()
        raise
    metrics().locate_handled.labels("found").inc()
    return jsonify(answer)


REHASH_WAIT = 2.0  # seconds a /recheck or /refresh waits for the re-hash already running before Busy


@contextmanager
def _rehash_turn() -> Iterator[None]:
    """One re-hash at a time per worker: /recheck and /refresh cost at most what a download does.

    A request that cannot have its turn within REHASH_WAIT is Busy (503), so a crowd of them holds
    no worker for longer than that.
    """
    lock = current_app.extensions.setdefault("rehash_lock", threading.Lock())
    if not lock.acquire(timeout=REHASH_WAIT):
        raise Busy("this peer is re-hashing another file; try again shortly")
    try:
        yield
    finally:
        lock.release()


@bp.post("/refresh")
def refresh():
    """Hash every shared file again (each at most once per RECHECK_WINDOW), then re-register the whole list.

    At the scrub's pace (settings.scrub_rate, peer_app/scrub.py), shared by this worker's refreshes.
    """
    changed = []
    pace = current_app.extensions.setdefault("rehash_pace", Pace(node().settings.scrub_rate))
    with _rehash_turn():
        for name, size in index().scrub_order():
            result = index().recheck(name, RECHECK_WINDOW, pace=pace)
            if result is not None and result[1]:
                pace.file(size)
                if result[0].changed:
                    changed.append(name)
    answer = agent.register_at_maestro(node(), index(), credentials())
    return jsonify({"status": "refreshed", "peer": node().name, "files": answer.get("files"), "changed": changed})


@bp.post("/recheck")
def recheck():
    """Hash one shared file again now (at most once per RECHECK_WINDOW); re-register at once if its bytes changed.

    A client calls this after a holder sent bytes that do not match the digest it advertised.
    """
    name = check_name(json_body().get("file"))
    with _rehash_turn():
        result = index().recheck(name, RECHECK_WINDOW)
    if result is None:
        raise NotFound(f"no file {name!r} is shared by {node().name}")
    check, fresh = result
    if fresh and check.changed:
        try:
            agent.register_at_maestro(node(), index(), credentials())
        except P2PError as err:  # the scrub's agent registers it later; the answer still says what changed
            log.warning("re-registration after a recheck of %s failed: %s", name, err.detail)
    return jsonify(check.to_json())


@bp.post("/register")
def register():
    """Remember a peer, once it proved to be one of ours (the name is the one it proved).

    A peer's credential introduces that peer only: the URL must prove to be the caller itself.
    """
    config = node()
    body = json_body()
    url = check_peer_url(body.get("url"), tls=config.security.tls)
    name = body.get("name")
    if name is not None:
        check_peer_name(name)
    caller = current_caller()
    only = caller.name if caller.is_peer else None
    if only is not None and name is not None and name != only:
        raise Forbidden(f"{only} may introduce only itself, not {name!r}")
    status = "self"
    if url != config.rest_url:
        verifier().learn(known(), url, limit=config.settings.max_learned_peers, claimed_name=name, only=only)
        discovery().back({"url": url}, now=True)  # a down mark from before its restart ends if it answers a probe
        status = "registered"
    peers = [{"url": p["url"], "name": p["name"], "grpc_address": p["grpc_address"]} for p in known().all()]
    return jsonify({"status": status, "name": config.name, "peers": peers})


@bp.post("/bootstrap")
def bootstrap():
    friends = agent.bootstrap(node(), known(), credentials(), verifier())
    return jsonify({"peer": node().name, "friends": friends})


@bp.get("/peers")
def peers():
    return jsonify({"peer": node().name, "peers": known().all()})
