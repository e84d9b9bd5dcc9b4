"""The Maestro: a central directory of peers and their files (SPEC §4).

Run it with `gunicorn 'maestro_app:create_app()'` and P2P_CONFIG pointing at its config.
"""
from __future__ import annotations

from flask import Flask

from common.config import NodeConfig, load_config
from common.web import install_error_handlers
from maestro_app.directory import Directory


def create_app(config: NodeConfig | None = None) -> Flask:
    """Build the Maestro app; read the config from $P2P_CONFIG when none is given."""
    config = config or load_config()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["NODE"] = config
    app.extensions["directory"] = Directory(
        config.db_path,
        default_interval=config.settings.heartbeat_interval,
        expire_after_beats=config.settings.expire_after_beats,
    )
    from maestro_app.views import bp

    app.register_blueprint(bp)
    install_error_handlers(app)
    return app
