"""The Maestro: a central directory of peers and their files (docs/api.md, "Maestro REST").

Run it with `gunicorn 'maestro_app:create_app()'` and P2P_CONFIG pointing at its config.
"""

from __future__ import annotations

from flask import Flask
from prometheus_client.core import GaugeMetricFamily

from client.credentials import Credentials
from common.config import NodeConfig, load_config
from common.metrics import ScrapeCollector, install_metrics
from common.security import Guard
from common.web import RequestCheck, host_check, install_body_limit, install_checks, install_error_handlers
from maestro_app.directory import Directory
from maestro_app.fastpath import LocateFastPath


def create_app(config: NodeConfig | None = None) -> Flask:
    """Build the Maestro app; read the config from $P2P_CONFIG when none is given."""
    config = config or load_config()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider has it
    app.config["NODE"] = config
    directory = app.extensions["directory"] = Directory(
        config.db_path,
        default_interval=config.settings.heartbeat_interval,
        expire_after_beats=config.settings.expire_after_beats,
        max_files=config.settings.max_files_per_peer,
        max_interval=config.settings.max_heartbeat_interval,
    )
    directory.started()  # after a restart: the downtime does not count against the peers
    # gunicorn's post_worker_init (common.gunicorn_conf) starts these once the worker serves.
    app.extensions["on_worker_start"] = [directory.keep_time]
    from maestro_app import ui
    from maestro_app.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(ui.bp)
    metrics = install_metrics(app, [ScrapeCollector(lambda: directory_gauges(directory))])
    guard = Guard.of(config.security)
    app.extensions["credentials"] = Credentials.of_node(config, guard)  # /ui/search asks a peer as the Maestro
    check = RequestCheck(guard, host_check(config))
    install_checks(app, check)
    install_error_handlers(app)
    install_body_limit(app, config.settings.max_body_bytes)
    app.wsgi_app = LocateFastPath(app.wsgi_app, directory, metrics, check)  # type: ignore[method-assign]
    return app


def directory_gauges(directory: Directory) -> list[GaugeMetricFamily]:
    """The directory's sizes, read from SQLite when /metrics is scraped."""
    counts = directory.counts()
    return [
        GaugeMetricFamily("p2p_peers_registered", "peers the Maestro knows", value=counts["peers"]),
        GaugeMetricFamily("p2p_peers_alive", "peers heard from within the expiry", value=counts["alive"]),
        GaugeMetricFamily("p2p_files_registered", "(file, peer) pairs in the directory", value=counts["files"]),
    ]
