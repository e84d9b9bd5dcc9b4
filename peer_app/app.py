"""The peer's REST app factory: index, known peers, discovery, metrics and routes."""

from __future__ import annotations

from concurrent import futures

from flask import Flask

from client.api import rest_transport
from client.credentials import Credentials
from common.config import NodeConfig, load_config
from common.metrics import ScrapeCollector, install_metrics
from common.security import Guard
from common.web import install_body_limit, install_error_handlers, install_guard
from peer_app.answers import checker
from peer_app.index import SharedIndex
from peer_app.membership import Transport, Verifier
from peer_app.metrics import transfer_families
from peer_app.search import Discovery, Gate, check_answer
from peer_app.state import SeenQueries, TransferTotals, known_peers, open_db


def count_dropped(app: Flask, reason: str) -> None:
    """Count one remote answer dropped by the checks (p2p_remote_answers_dropped_total)."""
    app.extensions["metrics"].remote_answers_dropped.labels(reason).inc()


def create_app(config: NodeConfig | None = None, transport: Transport | None = None) -> Flask:
    """Build a peer's REST app; read the config from $P2P_CONFIG when none is given.

    transport (how this peer asks others, default REST with its own credential) is for tests.
    """
    config = config or load_config()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["NODE"] = config
    guard = Guard.of(config.security)
    credentials = Credentials.of_node(config, guard)
    transport = transport or rest_transport(credentials)
    db = open_db(config.db_path)
    known = known_peers(db, config)
    index = SharedIndex.for_node(config, db)
    me = {"name": config.name, "url": config.rest_url, "grpc_address": config.grpc_address}
    # One thread per hop being waited on (a greenlet under gevent, where many cost little).
    pool = futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="discovery")
    app.extensions.update(
        index=index,
        known_peers=known,
        credentials=credentials,
        verifier=Verifier(guard, transport, timeout=config.settings.request_timeout, tls=config.security.tls),
        discovery=Discovery(
            me,
            lambda: [f.to_json() for f in index.scan()],
            known,
            SeenQueries(db),
            transport,
            request_timeout=config.settings.request_timeout,
            pool=pool,
            gate=Gate(config.settings.search_concurrency),
            local_file=lambda name: (info := index.get(name)) and info.to_json(),
            check=checker(
                config.name,
                lambda reason: app.extensions["metrics"].remote_answers_dropped.labels(reason).inc(),
                base=check_answer,
            ),
            probe_every=config.settings.down_mark_probe,
        ),
    )
    from peer_app.views import bp

    app.register_blueprint(bp)
    totals = TransferTotals(db)
    install_metrics(app, [ScrapeCollector(lambda: transfer_families(totals))])
    install_guard(app, guard)
    install_error_handlers(app)
    install_body_limit(app, config.settings.max_body_bytes)
    return app
