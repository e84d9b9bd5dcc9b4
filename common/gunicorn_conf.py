"""gunicorn hooks for every REST server (`--config python:common.gunicorn_conf`).

The master empties the node's metrics folder and exports PROMETHEUS_MULTIPROC_DIR before it
forks a worker, so each worker imports prometheus_client already in multiprocess mode
(prometheus_client picks its value class when first imported). Hence the master never imports
prometheus_client, or anything that does: this module does not, and its hooks neither.

Each worker counts into memory-mapped files (prometheus_client's multiprocess mode). A page of
such a file that has no disk block behind it yet, written on a full disk, kills the worker with
SIGBUS, again and again as each new worker starts. So every worker's files get all their blocks
before prometheus_client maps them (post_fork: posix_fallocate, sized for common.metrics'
bounded series); where the disk cannot give them, that worker counts in memory instead, which
costs its share of /metrics and nothing else. A dead worker's files are cut back to what they
hold (child_exit), so restarts do not pile up preallocated space.

Workers die with their master (PR_SET_PDEATHSIG): a master killed with SIGKILL leaves no worker
holding the port for the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import struct
import sys
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client's multiprocess mode maps per worker pid, by metric type, and the bytes
# each gets up front: room for common.metrics.MAX_SERIES request series (about 3.3 KiB each in the
# histogram's file, 170 B in the counters'), checked by tests/unit/test_metrics.py.
PREALLOCATED = {"counter": 64 * 1024, "histogram": 256 * 1024}
PAGE = 4096
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

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


def metrics_file(folder: str, kind: str, pid: int) -> str:
    """The file prometheus_client's multiprocess mode maps for metrics of kind in process pid."""
    return os.path.join(folder, f"{kind}_{pid}.db")


def preallocate(folder: str, pid: int) -> None:
    """Create process pid's metrics files with every block allocated; OSError (nothing left) if the disk cannot."""
    made = []
    try:
        for kind, size in PREALLOCATED.items():
            path = metrics_file(folder, kind, pid)
            tmp = os.path.join(folder, f".{kind}_{pid}.tmp")  # not *.db: a scrape never reads it half made
            made.append(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            made.append(path)
    except OSError:
        for path in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise


def release(folder: str, pid: int) -> None:
    """Cut a dead process's metrics files back to the bytes they hold (their counts stay)."""
    for kind in PREALLOCATED:
        path = metrics_file(folder, kind, pid)
        try:
            with open(path, "r+b") as fh:
                head = fh.read(4)
                used = struct.unpack("i", head)[0] if len(head) == 4 else 0  # the file's first int: bytes in use
                keep = -(-max(used, 8) // PAGE) * PAGE
                if keep < os.fstat(fh.fileno()).st_size:
                    fh.truncate(keep)
        except OSError:
            continue
    # what prometheus_client's mark_process_dead does (without importing it into the master): a dead
    # process's live gauges go
    for path in glob.glob(os.path.join(folder, f"gauge_live*_{pid}.db")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def die_with_master(worker) -> None:
    """Have the kernel SIGKILL this worker when its master dies, however it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != worker.ppid:  # the master died before the line above
        os._exit(0)


def post_fork(server, worker) -> None:
    """In the new worker, before the app is loaded: die with the master; give the metrics files their blocks."""
    die_with_master(worker)
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return
    try:
        preallocate(folder, os.getpid())
    except OSError as err:
        count_in_memory()
        server.log.warning(
            "worker %d counts its metrics in memory (its share is missing from /metrics): %s", os.getpid(), err.strerror
        )


def count_in_memory() -> None:
    """Have this worker's metrics count in its memory, not in files (before it creates any).

    The master imported prometheus_client in multiprocess mode (share_libraries), which chose its
    value class then: the worker puts the in-memory one back, and common.metrics, seeing no
    folder, serves this worker's own registry.
    """
    del os.environ[MULTIPROC_ENV]
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.MutexValue  # type: ignore[attr-defined]


def child_exit(server, worker) -> None:
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        release(folder, worker.pid)


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
