"""The command lines that run a node: one place, used by the launcher and by the tests."""

from __future__ import annotations

import sys

from common.config import CONFIG_ENV, NodeConfig

GRACEFUL_TIMEOUT = 3  # seconds gunicorn gives in-flight requests on stop; supervisor waits longer
KEEP_ALIVE = 1  # seconds an idle keep-alive connection is held; a stopping worker waits it out


def node_programs(config: NodeConfig, config_path: str) -> dict[str, list[str]]:
    """Program name -> argv for every process of the node (run with cwd = project root)."""
    s = config.settings
    app = "maestro_app:create_app()" if config.role == "maestro" else "peer_app:create_app()"
    rest = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "gthread",
        "--workers",
        str(s.rest_workers),
        "--threads",
        str(s.rest_threads),
        "--bind",
        config.rest_bind,
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        "--timeout",
        "30",
        "--keep-alive",
        str(KEEP_ALIVE),
        "--no-control-socket",
        "--config",
        "python:common.gunicorn_conf",
        app,
    ]
    if config.role == "maestro":
        return {"maestro": rest}
    grpc = [sys.executable, "-m", "peer_app.grpc_server", "--config", config_path]
    return {f"{config.name}-rest": rest, f"{config.name}-grpc": grpc}


def node_environment(config_path: str) -> dict[str, str]:
    """Environment every process of a node needs besides the inherited one."""
    return {CONFIG_ENV: config_path, "PYTHONUNBUFFERED": "1"}
