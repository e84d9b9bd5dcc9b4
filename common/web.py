"""Flask plumbing both REST apps share: JSON errors, the credential check, strict parameter parsing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Literal, overload

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from common.browsers import HostCheck, cross_site, refuse_cross_site
from common.config import NodeConfig
from common.errors import BadRequest, NoAnswer, P2PError, TooLarge, Unavailable
from common.local_owner import ConnectionOwners
from common.security import MUTATING, OPEN, OWN, READ, Caller, Guard

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 1024
CALLER_KEY = "p2p.caller"  # the WSGI environ's key for the caller RequestCheck found (no header can set it)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Answered to anyone, whatever `read` says: liveness probes, and a peer's proof of membership (it
# shows only who the peer is; a verifier presents no credential to an unproven address).
OPEN_PATHS = frozenset({"/health", "/membership"})
# Requests whose kind is not what their method says (docs/security.md, "Least privilege").
REQUEST_KINDS = {
    ("POST", "/refresh"): OWN,  # a peer re-registers itself: the operator or that peer only
    ("POST", "/bootstrap"): OWN,  # a peer introduces itself to its friends: the operator or that peer only
    ("POST", "/recheck"): READ,  # hashes one of its files again (rate-limited per file): what reading costs
}


def install_error_handlers(app: Flask) -> None:
    """Answer every error as JSON {"error", "detail"}; never a traceback."""

    @app.errorhandler(P2PError)
    def _p2p_error(err: P2PError):
        if isinstance(err, NoAnswer):  # our upstream gave no answer; we do answer: unavailable
            err = Unavailable(err.detail)
        return jsonify(err.to_json()), err.http_status

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        name = (err.name or "error").lower().replace(" ", "_")
        return jsonify({"error": name, "detail": err.description}), err.code

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify({"error": "internal", "detail": "internal error; see the server log"}), 500


def install_body_limit(app: Flask, max_bytes: int) -> None:
    """Refuse request bodies over max_bytes with 413 too_large, whether declared (Content-Length) or chunked.

    A declared length over the limit is refused before a byte of the body is read, whatever the
    route. A chunked body is read (and cached for the view) through werkzeug's limited stream,
    which stops one byte past the limit: a body that reaches that byte is refused, so at most
    max_bytes + 1 bytes are ever held. The answer closes the connection: the rest is never read.
    """
    app.config["MAX_CONTENT_LENGTH"] = max_bytes + 1  # the stream's cap: one byte more tells "over the limit"

    @app.before_request
    def _check_body_size():
        declared = request.content_length
        chunked = declared is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if (declared or 0) > max_bytes or (chunked and len(request.get_data(cache=True)) > max_bytes):
            raise RequestEntityTooLarge()

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err: RequestEntityTooLarge):
        error = TooLarge(f"the request body is over this server's limit of {max_bytes} bytes (settings.max_body_bytes)")
        response = jsonify(error.to_json())
        response.headers["Connection"] = "close"
        return response, error.http_status


def request_kind(method: str, path: str) -> str:
    """What a REST request needs (docs/security.md): /health is open, reads are READ, REQUEST_KINDS, anything else
    MUTATING.

    The live page (`/ui` and its scripts) carries no data: it opens for anyone, and under
    `read: members` its own calls (/peers, /directory, /ui/search) ask for the token.
    """
    if path in OPEN_PATHS:
        return OPEN
    kind = REQUEST_KINDS.get((method, path))
    if kind is not None:
        return kind
    if method in READ_METHODS and (path == "/ui" or path.startswith("/ui/static/")):
        return OPEN
    return READ if method in READ_METHODS else MUTATING


def host_check(config: NodeConfig) -> HostCheck:
    """The Host names a node answers to (docs/security.md, "Host check")."""
    return HostCheck.of_node(config.host, config.bind, config.security.allowed_hosts)


class RequestCheck:
    """The one check of every REST request: Flask's (install_checks) and the WSGI fast paths' alike.

    First what a browser could abuse (common/browsers.py): a Host this node does not answer to
    (421, a page re-pointed at it by DNS) or another site's page calling (403); then who the
    caller is, by its credential or by the account that made its connection (common/security.py;
    the account is asked of the kernel once per connection, which gunicorn hands over in the
    WSGI environ). Returns the caller (None when the request needs no credential), kept in the
    environ (CALLER_KEY): a request a fast path let through to Flask is not checked twice.
    """

    def __init__(self, guard: Guard, hosts: HostCheck) -> None:
        self.guard = guard
        self.hosts = hosts
        self.owners = ConnectionOwners()

    def __call__(self, environ: MutableMapping) -> Caller | None:
        if CALLER_KEY in environ:
            return environ[CALLER_KEY]
        host = environ.get("HTTP_HOST")
        self.hosts.check(host)
        origin, site = environ.get("HTTP_ORIGIN"), environ.get("HTTP_SEC_FETCH_SITE")
        method = environ.get("REQUEST_METHOD", "")
        if (origin is not None or site is not None) and cross_site(
            method,
            environ.get("wsgi.url_scheme", "http"),
            host,
            origin,
            site,
            environ.get("HTTP_SEC_FETCH_MODE"),
            environ.get("HTTP_SEC_FETCH_DEST"),
        ):
            raise refuse_cross_site()
        caller = environ[CALLER_KEY] = self.guard.check(
            request_kind(method, environ.get("PATH_INFO", "")),
            environ.get("REMOTE_ADDR"),
            environ.get("HTTP_AUTHORIZATION"),
            lambda: self.owners.of(environ.get("gunicorn.socket")),
        )
        return caller

    def allows(self, environ: MutableMapping) -> bool:
        """Whether the request passes (for a fast path, which leaves any refusal to Flask to answer)."""
        try:
            self(environ)
        except P2PError:
            return False
        return True


def install_checks(app: Flask, check: RequestCheck) -> None:
    """Check every request (RequestCheck) before its view: the one hook of both REST apps."""
    app.extensions["guard"] = check.guard
    app.extensions["request_check"] = check

    @app.before_request
    def _check_request():
        g.caller = check(request.environ)


def current_caller() -> Caller:
    """Who made this (mutating) request; set by the guard before the view ran."""
    caller = g.get("caller")
    if caller is None:  # a view that needs a caller on a request the guard let through unchecked
        raise RuntimeError(f"no caller for {request.method} {request.path}: is the route's kind right?")
    return caller


@overload
def arg_str(
    name: str,
    *,
    required: Literal[True] = True,
    max_length: int = MAX_PARAM_LENGTH,
    default: str | None = None,
    args: Mapping[str, str] | None = None,
) -> str: ...


@overload
def arg_str(
    name: str,
    *,
    required: bool,
    max_length: int = MAX_PARAM_LENGTH,
    default: str | None = None,
    args: Mapping[str, str] | None = None,
) -> str | None: ...


def arg_str(
    name: str,
    *,
    required: bool = True,
    max_length: int = MAX_PARAM_LENGTH,
    default: str | None = None,
    args: Mapping[str, str] | None = None,
) -> str | None:
    """Return query parameter name (of args, default the request's), refusing missing, empty or oversized values."""
    value = (request.args if args is None else args).get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"query parameter '{name}' is required")
        return default
    if len(value) > max_length:
        raise BadRequest(f"query parameter '{name}' is longer than {max_length} characters")
    if "\x00" in value:
        raise BadRequest(f"query parameter '{name}' contains NUL")
    return value


def _arg_number(name: str, parse, kind: str, default, minimum, maximum, args: Mapping[str, str] | None):
    """A numeric query parameter: default when absent, 400 when malformed or below minimum, capped."""
    raw = (request.args if args is None else args).get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be {kind}, got {raw[:40]!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise BadRequest(f"query parameter '{name}' must be >= {minimum}, got {raw[:40]}")
    return min(value, maximum) if maximum is not None else value


def arg_int(
    name: str, *, default: int, minimum: int = 0, maximum: int | None = None, args: Mapping[str, str] | None = None
) -> int:
    """Return an integer query parameter, capped at maximum; 400 if not an integer >= minimum."""
    return _arg_number(name, int, "an integer", default, minimum, maximum, args)


def arg_float(
    name: str,
    *,
    default: float,
    minimum: float = 0.0,
    maximum: float | None = None,
    args: Mapping[str, str] | None = None,
) -> float:
    """Return a number query parameter, capped at maximum; 400 if not a number >= minimum."""
    return _arg_number(name, float, "a number", default, minimum, maximum, args)


def json_body() -> dict:
    """Return the request's JSON object body, or raise BadRequest."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object (Content-Type: application/json)")
    return data
