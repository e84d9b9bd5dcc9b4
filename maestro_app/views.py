"""The Maestro's REST routes (SPEC §4): parse, call the Directory, answer JSON."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from common.errors import BadRequest, NotFound
from common.names import check_name
from common.web import arg_str, check_url, json_body
from maestro_app.directory import Directory, FileEntry, parse_friends

bp = Blueprint("maestro", __name__)


def directory() -> Directory:
    return current_app.extensions["directory"]


@bp.get("/")
def status():
    return jsonify({"status": "ok", "service": "maestro", **directory().counts()})


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "peer": "maestro"})


@bp.get("/peers")
def peers():
    return jsonify({"peers": directory().peers()})


@bp.get("/directory")
def full_directory():
    files = directory().directory()
    return jsonify({"files": files, "count": len(files)})


@bp.get("/locate")
def locate():
    name = check_name(arg_str("file"))
    holders = directory().locate(name)
    if not holders:
        raise NotFound(f"no live peer has {name!r}")
    return jsonify({"file": name, "peers": holders})


@bp.post("/register")
def register():
    body = json_body()
    files = body.get("files", [])
    if not isinstance(files, list):
        raise BadRequest("'files' must be a list")
    entries = [FileEntry.parse(f, i) for i, f in enumerate(files)]
    grpc_address = body.get("grpc_address")
    if not isinstance(grpc_address, str) or ":" not in grpc_address or len(grpc_address) > 300:
        raise BadRequest("'grpc_address' must be HOST:PORT")
    interval = body.get("heartbeat_interval")
    if interval is not None and (not isinstance(interval, (int, float)) or not 0 < interval <= 3600):
        raise BadRequest("'heartbeat_interval' must be a number of seconds in (0, 3600]")
    friends = parse_friends(body.get("friends"))
    rest_url = check_url(body.get("rest_url"), "rest_url")
    directory().register(body.get("name"), rest_url, grpc_address, entries, interval, friends)
    return jsonify({"status": "registered", "name": body["name"], "files": len(entries)})


@bp.post("/heartbeat")
def heartbeat():
    name = json_body().get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("'name' is required")
    directory().heartbeat(name)
    return jsonify({"status": "ok"})
