"""The peer's REST app factory: index, known peers, discovery, metrics and routes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

from flask import Flask

from client.api import HopClient
from common.config import NodeConfig, load_config
from common.metrics import ScrapeCollector, install_metrics
from common.web import install_body_limit, install_error_handlers
from peer_app.index import SharedIndex
from peer_app.metrics import transfer_families
from peer_app.search import Discovery, Gate
from peer_app.state import SeenQueries, TransferTotals, known_peers, open_db


def http_transport() -> Callable[[str, str, dict, float], dict]:
    """Discovery's transport over REST: keep-alive GETs to the other peers."""
    hops = HopClient()

    def transport(url: str, route: str, params: dict, timeout: float) -> dict:
        return hops.get(url + route, params, timeout)

    return transport


def create_app(config: NodeConfig | None = None, transport=None) -> Flask:
    """Build a peer's REST app; read the config from $P2P_CONFIG when none is given."""
    config = config or load_config()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["NODE"] = config
    db = open_db(config.db_path)
    known = known_peers(db, config)
    index = SharedIndex.for_node(config, db)
    me = {"name": config.name, "url": config.rest_url, "grpc_address": config.grpc_address}
    # One thread per hop being waited on (a greenlet under gevent, where many cost little).
    pool = futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="discovery")
    app.extensions.update(
        index=index,
        known_peers=known,
        discovery=Discovery(
            me,
            lambda: [f.to_json() for f in index.scan()],
            known,
            SeenQueries(db),
            transport or http_transport(),
            request_timeout=config.settings.request_timeout,
            pool=pool,
            gate=Gate(config.settings.search_concurrency),
            local_file=lambda name: (info := index.get(name)) and info.to_json(),
        ),
    )
    from peer_app.views import bp

    app.register_blueprint(bp)
    totals = TransferTotals(db)
    install_metrics(app, [ScrapeCollector(lambda: transfer_families(totals))])
    install_error_handlers(app)
    install_body_limit(app, config.settings.max_body_bytes)
    return app
