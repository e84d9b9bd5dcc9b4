"""One error vocabulary for REST, gRPC and the CLI.

Each error carries the HTTP status, the gRPC status code, a short machine name and the
CLI's exit code (docs/api.md, "Exit codes"). Servers send the name (the JSON body's `error`, the gRPC
trailing metadata ERROR_NAME_KEY); clients turn it back into the same class by that name
(error_class), never by the status, which several errors share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class _StatusCode:
    """A class attribute that is a grpc.StatusCode, imported only when read.

    The CLI's commands that never speak gRPC (locate, search) then never import grpc
    (tens of milliseconds of start-up); servers and gRPC clients read it as before.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> grpc.StatusCode:
        import grpc

        return grpc.StatusCode[self.name]


class P2PError(Exception):
    """Base of every error p2pnet reports to a user."""

    http_status = 500
    grpc_code = _StatusCode("INTERNAL")
    name = "internal"
    exit_code = 1  # docs/api.md: 1 other, 2 usage, 3 not found, 4 unreachable, 5 integrity, 6 busy, 7 unauthorized

    def __init__(self, detail: str = "", *, extra: dict | None = None) -> None:
        super().__init__(detail or self.__doc__ or self.name)
        self.detail = detail or (self.__doc__ or self.name).strip()
        self.extra = extra or {}  # more fields for the JSON body (e.g. a locate's "complete")

    def to_json(self) -> dict:
        return {"error": self.name, "detail": self.detail, **self.extra}


class BadRequest(P2PError):
    """The request is malformed: fix the named parameter and retry."""

    http_status = 400
    grpc_code = _StatusCode("INVALID_ARGUMENT")
    name = "bad_request"
    exit_code = 2


class InvalidName(BadRequest):
    """The file name is not a plain name inside the shared folder."""

    name = "invalid_name"
    exit_code = 2


class Unauthorized(P2PError):
    """The request carries no valid credentials for this network."""

    http_status = 401
    grpc_code = _StatusCode("UNAUTHENTICATED")
    name = "Unauthorized"  # docs/security.md spells these two names
    exit_code = 7


class Forbidden(P2PError):
    """The credentials are valid but do not allow this (a peer acting as another peer)."""

    http_status = 403
    grpc_code = _StatusCode("PERMISSION_DENIED")
    name = "Forbidden"
    exit_code = 7


class CrossSite(Forbidden):
    """A browser sent this for a page of another site: open the node's own page (/ui), or use curl or the CLI."""

    name = "cross_site"


class MisdirectedRequest(P2PError):
    """The request names a host this node does not answer to: use its address or its topology host."""

    http_status = 421
    grpc_code = _StatusCode("PERMISSION_DENIED")
    name = "misdirected_request"
    exit_code = 1


class PermissionDenied(P2PError):
    """The file lies outside the shared folder (e.g. through a symlink)."""

    http_status = 403
    grpc_code = _StatusCode("PERMISSION_DENIED")
    name = "permission_denied"
    exit_code = 1


class NotFound(P2PError):
    """No such file or peer: check the name, or locate it first."""

    http_status = 404
    grpc_code = _StatusCode("NOT_FOUND")
    name = "not_found"
    exit_code = 3


class AlreadyExists(P2PError):
    """A file of that name exists already."""

    http_status = 409
    grpc_code = _StatusCode("ALREADY_EXISTS")
    name = "already_exists"
    exit_code = 1


class TooLarge(P2PError):
    """The upload is larger than the peer accepts."""

    http_status = 413
    grpc_code = _StatusCode("RESOURCE_EXHAUSTED")
    name = "too_large"
    exit_code = 1


class Busy(P2PError):
    """The peer is at its limit of concurrent transfers; retry shortly."""

    http_status = 503
    grpc_code = _StatusCode("RESOURCE_EXHAUSTED")
    name = "busy"
    exit_code = 6


class DataLoss(P2PError):
    """The bytes received do not match their sha256; nothing was kept."""

    http_status = 502
    grpc_code = _StatusCode("DATA_LOSS")
    name = "data_loss"
    exit_code = 5


class Unavailable(P2PError):
    """A peer or the Maestro did not answer in time; check that it is running."""

    http_status = 503
    grpc_code = _StatusCode("UNAVAILABLE")
    name = "unavailable"
    exit_code = 4


class StorageError(P2PError):
    """The peer could not read or write its shared folder; its operator can see why in its log."""

    http_status = 500
    grpc_code = _StatusCode("INTERNAL")
    name = "storage_error"
    exit_code = 1


class InsufficientStorage(StorageError):
    """The disk is full, or would be: nothing was written; free space (or ask the operator), then retry.

    A node's disk holds its reserve (settings.disk_reserve_bytes) for itself: an upload that would
    eat into it is refused before a byte is stored, and a write the disk cannot take (its SQLite
    database, a file) fails with this error instead of a crash. Reads go on as before.
    """

    http_status = 507
    grpc_code = _StatusCode("RESOURCE_EXHAUSTED")
    name = "insufficient_storage"
    exit_code = 1


class QuotaExceeded(InsufficientStorage):
    """The uploader's files on this peer would pass its quota (settings.member_quota_bytes): nothing was stored."""

    name = "quota_exceeded"


class NoAnswer(Unavailable):
    """Nothing answered at all (timeout, connection refused or cut): the host may be down or cut off.

    A caller that keeps a "down" mark on peers (KnownPeers) sets it for these, never for a
    server that answered with an error (a server relays its own NoAnswer as Unavailable: it did
    answer; see common.web).
    """

    name = "no_answer"


class NoLane(P2PError):
    """This peer offers no fast lane (turned off, TLS on, or an older peer): use the gRPC stream."""

    http_status = 409
    grpc_code = _StatusCode("FAILED_PRECONDITION")
    name = "no_lane"
    exit_code = 1


class Incomplete(Unavailable):
    """Part of the network did not answer in time or shed the request, so nothing was found; retry shortly."""

    name = "incomplete"


class TimedOut(NoAnswer):
    """Nothing answered within the time given (the host may be down, cut off, or just too busy)."""

    name = "timed_out"


class Interrupted(Exception):
    """The user stopped a client command (Ctrl-C); the message says what was kept.

    Not a P2PError: it never crosses the wire and its exit code, 130 (128 + SIGINT, what shells
    report for a command stopped by Ctrl-C), lies outside the failure codes of docs/api.md ("Exit codes").
    """

    exit_code = 130

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_BY_GRPC_CODE = {  # by grpc.StatusCode name
    "INVALID_ARGUMENT": BadRequest,
    "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "RESOURCE_EXHAUSTED": Busy,
    "DATA_LOSS": DataLoss,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": Unavailable,
    "UNAUTHENTICATED": Unauthorized,
    "FAILED_PRECONDITION": NoLane,
    "UNIMPLEMENTED": NoLane,  # only OpenLane is new enough to be missing on a peer
}


ERROR_NAME_KEY = "p2p-error"  # trailing metadata naming the exact error (one gRPC code, several errors)


def _subclasses(cls: type[P2PError]) -> list[type[P2PError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _subclasses(direct)]


def error_class(name: object) -> type[P2PError] | None:
    """The P2PError class whose machine name is name (as a server sent it), or None."""
    return next((c for c in _subclasses(P2PError) if c.name == name), None)


def from_rpc_error(err) -> P2PError:
    """Turn a failed gRPC call into the matching P2PError: by the error's name, else by the status code."""
    code = err.code() if hasattr(err, "code") else None
    detail = err.details() if hasattr(err, "details") else str(err)
    metadata: dict = dict(err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else {}
    cls = error_class(metadata.get(ERROR_NAME_KEY)) or _BY_GRPC_CODE.get(getattr(code, "name", ""), P2PError)
    return cls(f"{detail or code}")


def from_http_error(body: object, text: str = "") -> P2PError:
    """Turn an HTTP error answer into the P2PError its JSON body names ({"error", "detail"})."""
    if isinstance(body, dict):
        extra = {key: body[key] for key in ("complete", "missing") if key in body}  # a partial 404/503 says so
        return (error_class(body.get("error")) or P2PError)(f"{body.get('detail')}", extra=extra)
    return P2PError(text)
