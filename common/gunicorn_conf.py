"""gunicorn hooks for every REST server (`--config python:common.gunicorn_conf`).

The master empties the node's metrics folder and exports PROMETHEUS_MULTIPROC_DIR before it
forks a worker, so each worker imports prometheus_client already in multiprocess mode
(prometheus_client picks its value class when first imported). Hence this module must not
import prometheus_client, or anything that does, before on_starting has run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# One line per request in the program's log (stdout, which supervisord writes to logs/<program>.log):
# [22/Nov/2026:01:08:20 +0000] 127.0.0.1 "GET /locate?file=archivo1.txt HTTP/1.1" 200 245 1ms
accesslog = "-"
logger_class = "common.access_log.AccessLogger"  # imported by gunicorn only, when it starts


def metrics_dir(run_dir: str, node_name: str) -> str:
    """The node's own multiprocess folder inside its run folder."""
    return os.path.join(run_dir, "metrics", node_name)


def reset_dir(path: str) -> str:
    """Empty (or create) the multiprocess folder; once per node start, before any worker."""
    shutil.rmtree(path, ignore_errors=True)
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def on_starting(server) -> None:
    from common.config import load_config
    from common.net import bind_problem

    config = load_config()
    # gunicorn retries a failed bind for ~5 s, longer than supervisord's startsecs, so a node that
    # cannot listen would count as started and restart forever; one try, then exit with the reason:
    # supervisord retries a few times and ends in FATAL, which `up` and `status` report.
    problem = bind_problem(config.bind or config.host, config.rest_port)
    if problem is not None:
        server.log.error("cannot bind REST on %s: %s", config.rest_bind, problem)
        sys.exit(1)
    os.environ[MULTIPROC_ENV] = reset_dir(metrics_dir(config.run_dir, config.name))
    if not config.settings.access_log:  # `settings: {access_log: false}`: no line per request
        server.cfg.set("accesslog", None)
        server.log.setup(server.cfg)
    share_libraries()


def share_libraries() -> None:
    """Import the libraries every worker loads into the master, and keep the collector off them.

    Workers are forked from the master: what it imported before the fork is shared with each of
    them, page for page, as long as nobody writes to those pages; gc.freeze() keeps the cycle
    collector from writing to them. About 10 MiB per worker. Only libraries that create no lock or
    thread at import (Flask, prometheus_client, after the multiprocess folder is set): the gevent
    worker patches threading after the fork, and the app itself is built in each worker after it.
    """
    import gc

    import flask  # noqa: F401
    import prometheus_client  # noqa: F401

    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker) -> None:
    """The access lines still waiting are written before the worker goes (common/access_log.py).

    And what share_libraries froze is handed back to the collector: frozen objects (the logging
    handlers among them) would otherwise be finalised after gevent is torn down, with a traceback.
    """
    import gc

    flush = getattr(server.log, "flush_access", None)
    if flush is not None:
        flush()
    gc.unfreeze()


def post_worker_init(worker) -> None:
    """Start what the app wants running beside its requests (the Maestro's clock), in the worker."""
    for start in getattr(worker.wsgi, "extensions", {}).get("on_worker_start", ()):
        start()
