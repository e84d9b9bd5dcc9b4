"""The Maestro's REST routes (docs/api.md, "Maestro REST"): parse, call the Directory, answer JSON."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from common.errors import BadRequest, NotFound
from common.fields import check_grpc_address
from common.names import check_name, check_peer_name
from common.urls import check_peer_url
from common.web import arg_int, arg_str, current_caller, json_body
from maestro_app.directory import (
    DIRECTORY_MAX_PAGE,
    DIRECTORY_PAGE,
    Directory,
    check_interval,
    parse_files,
    parse_friends,
)

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
    limit = arg_int("limit", default=DIRECTORY_PAGE, minimum=1, maximum=DIRECTORY_MAX_PAGE)
    return jsonify(directory().directory(limit, arg_str("after", required=False) or ""))


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
    entries = parse_files(body.get("files", []), directory().max_files)
    grpc_address = check_grpc_address(body.get("grpc_address"))
    interval = check_interval(body.get("heartbeat_interval"), directory().max_interval)
    friends = parse_friends(body.get("friends"))
    # scheme://host:port only: the Maestro's /ui/search calls this URL (with the read credential at most)
    rest_url = check_peer_url(body.get("rest_url"), tls=current_app.config["NODE"].security.tls, key="rest_url")
    name = check_peer_name(body.get("name"))
    current_caller().require_self(name)
    directory().register(name, rest_url, grpc_address, entries, interval, friends)
    return jsonify({"status": "registered", "name": name, "files": len(entries)})


@bp.post("/heartbeat")
def heartbeat():
    name = json_body().get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("'name' is required")
    current_caller().require_self(name)
    directory().heartbeat(name)
    return jsonify({"status": "ok"})
