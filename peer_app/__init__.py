"""A peer's servers: REST for files, search and discovery (app.py), gRPC for bytes (grpc_server.py).

Run the REST side with `gunicorn 'peer_app:create_app()'` and P2P_CONFIG pointing at its config.
The client library and the CLI live in client/ (peer_app/client.py only keeps
`python -m peer_app.client` working).
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """Build a peer's REST app (see peer_app.app.create_app).

    Imported lazily so that the gRPC server and `python -m peer_app.client` (the CLI shim),
    which import this package too, do not load Flask: ~20 MiB of RSS per process.
    """
    from peer_app.app import create_app as build

    return build(*args, **kwargs)
