"""A peer: REST API for files, search and discovery (app.py), gRPC for bytes (grpc_server.py).

Run the REST side with `gunicorn 'peer_app:create_app()'` and P2P_CONFIG pointing at its config.
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """Build a peer's REST app (see peer_app.app.create_app).

    Imported lazily so that the client library and the gRPC server, which live in this
    package too, do not load Flask: it costs the client ~20 MiB of RSS per process.
    """
    from peer_app.app import create_app as build

    return build(*args, **kwargs)
