"""The peer's REST app factory: index, known peers, discovery, metrics and routes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent import futures

from flask import Flask

from client.api import rest_transport
from common.config import NodeConfig, load_config
from common.credentials import Credentials
from common.metrics import ScrapeCollector, install_metrics
from common.security import Guard
from common.web import RequestCheck, host_check, install_body_limit, install_checks, install_error_handlers
from peer_app.answers import checker
from peer_app.hoppath import HopFastPath
from peer_app.index import SharedIndex
from peer_app.membership import Transport, Verifier
from peer_app.scrape import transfer_families
from peer_app.search import Discovery, Gate, check_answer
from peer_app.state import SeenQueries, TransferTotals, known_peers, open_db

LISTING_TTL = 1.0  # seconds a search may answer from a listing of the shared folder (an edit in place shows after)


class Listing:
    """The shared files as a search matches them: scanned again when the folder's entries changed
    (its mtime) or LISTING_TTL seconds passed, not on every hop (a flood brings one per search)."""

    def __init__(
        self, scan: Callable[[], list[dict]], folder: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.scan = scan
        self.folder = folder
        self.clock = clock
        self._last: tuple[int, float, list[dict]] | None = None

    def __call__(self) -> list[dict]:
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            mtime = -1
        now = self.clock()
        last = self._last
        if last is None or last[0] != mtime or now - last[1] > LISTING_TTL:
            last = self._last = (mtime, now, self.scan())
        return last[2]


def create_app(config: NodeConfig | None = None, transport: Transport | None = None) -> Flask:
    """Build a peer's REST app; read the config from $P2P_CONFIG when none is given.

    transport (how this peer asks others, default REST: hops with its hop credential, verifications
    with no credential) is for tests.
    """
    config = config or load_config()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider has it
    app.config["NODE"] = config
    guard = Guard.of(config.security, config.name)
    credentials = Credentials.of_node(config, guard)  # /refresh and /bootstrap: this peer acting as itself
    # hops and verifications go to addresses members chose: never this peer's own credential. Hops
    # show the hop credential (reads, and says which peer sends the hop); verifications ask an
    # address not yet proven, so they show none (peer_app/membership.py).
    hops = transport or rest_transport(Credentials.hops_of_node(config, guard))
    transport = transport or rest_transport(credentials.without_token())
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
            Listing(lambda: [f.to_json() for f in index.scan()], config.shared_dir),
            known,
            SeenQueries(db, shared=config.settings.rest_workers > 1),
            hops,
            request_timeout=config.settings.request_timeout,
            pool=pool,
            gate=Gate(config.settings.search_concurrency),
            local_file=lambda name: info.to_json() if (info := index.get(name)) is not None else None,
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
    metrics = install_metrics(app, [ScrapeCollector(lambda: transfer_families(totals))])
    check = RequestCheck(guard, host_check(config))
    install_checks(app, check)
    install_error_handlers(app)
    install_body_limit(app, config.settings.max_body_bytes)
    fast = HopFastPath(app.wsgi_app, app.extensions["discovery"], metrics, check, config.settings)
    app.wsgi_app = fast  # type: ignore[method-assign]  # Flask's way to wrap the WSGI app
    return app
