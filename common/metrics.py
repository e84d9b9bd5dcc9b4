"""Prometheus /metrics for both REST apps, correct under several gunicorn workers.

Why prometheus_client's multiprocess mode and not counters in SQLite: a counter bump is then
a write to a memory-mapped file owned by the worker (no lock shared between workers, no
SQLite write transaction on every request), so the Maestro's /locate keeps its thousands of
requests per second. The folder is per node (`<run_dir>/metrics/<name>`); gunicorn's master
empties it and exports PROMETHEUS_MULTIPROC_DIR in `on_starting` (common/gunicorn_conf.py),
before any worker imports prometheus_client. Without that variable (tests in one process)
the same code counts in memory. Values that already live in SQLite (the Maestro's peers,
a peer's transfer bytes written by its gRPC process) are read at scrape time by collectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from common.gunicorn_conf import MULTIPROC_ENV

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Request series (endpoint, method, status) one process keeps; later ones are counted together as
# OVERFLOW. A bound, so a caller inventing methods cannot grow the metrics files without end (and
# their preallocated size, common/gunicorn_conf.py, holds them all).
MAX_SERIES = 64
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "OTHER"
OVERFLOW = ("<other>", "OTHER", "other")


def multiprocess_dir() -> str | None:
    """The folder workers count into, or None when counting in memory."""
    return os.environ.get(MULTIPROC_ENV) or None


class ScrapeCollector(Collector):
    """A collector whose metric families come from a function called at each scrape."""

    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self.produce = produce

    def collect(self) -> Iterable[Metric]:
        return self.produce()


class Metrics:
    """One app's counters; `render()` answers /metrics with every worker's counts summed."""

    def __init__(self, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "p2p_http_requests_total",
            "REST requests answered",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "p2p_http_request_duration_seconds",
            "REST request latency",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search_handled = Counter(
            "p2p_search_handled_total", "flood search queries handled here", registry=self.registry
        )
        self.search_duplicates = Counter(
            "p2p_search_duplicates_total", "flood search queries dropped as already seen", registry=self.registry
        )
        self.search_incomplete = Counter(
            "p2p_search_incomplete_total",
            "flood search answers that said complete: false (a hop timed out, was shed or unreachable)",
            registry=self.registry,
        )
        self.locate_handled = Counter(
            "p2p_locate_handled_total", "P2P locate requests handled here", ["outcome"], registry=self.registry
        )
        self.remote_answers_dropped = Counter(
            "p2p_remote_answers_dropped_total",
            "answers from other peers dropped as malformed, oversized or lying (peer_app/answers.py)",
            ["reason"],
            registry=self.registry,
        )
        self._children: dict[tuple, tuple] = {}  # (rule, method, status) as asked -> its series
        self._series_by_name: dict[tuple[str, str, str], tuple] = {}  # at most MAX_SERIES + 1
        folder = multiprocess_dir()
        if folder:
            from prometheus_client import multiprocess

            # auto_describe off: registering must not read the folder. Another worker may be
            # creating its file at this instant (empty for a moment), and a read then would
            # crash this worker's boot, and with it the whole gunicorn master.
            self.exposed = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(self.exposed, path=folder)
        else:
            self.exposed = self.registry
        for collector in collectors:
            self.exposed.register(collector)

    def observe_request(self, rule: str, method: str, status: int, seconds: float | None) -> None:
        """Count one answered request and its latency."""
        key = (rule, method, status)
        pair = self._children.get(key)
        if pair is None:  # labels() once per distinct key, not per request
            pair = self._series((rule, method if method in METHODS else "OTHER", str(status)))
            if len(self._children) < 4 * MAX_SERIES:  # remember the key too (a bounded memo)
                self._children[key] = pair
        pair[0].inc()
        if seconds is not None:
            pair[1].observe(seconds)

    def _series(self, named: tuple[str, str, str]) -> tuple:
        """The (counter, histogram) children of one series, or the OVERFLOW ones past MAX_SERIES."""
        pair = self._series_by_name.get(named)
        if pair is None:
            if len(self._series_by_name) >= MAX_SERIES:
                named = OVERFLOW
                pair = self._series_by_name.get(named)
            if pair is None:
                pair = self._series_by_name[named] = (self.requests.labels(*named), self.latency.labels(*named))
        return pair

    def render(self) -> Response:
        return Response(generate_latest(self.exposed), mimetype=CONTENT_TYPE_LATEST)


def install_metrics(app: Flask, collectors: Iterable[Collector] = ()) -> Metrics:
    """Count every request of app by endpoint, method and status, and serve GET /metrics."""
    metrics = Metrics(collectors)
    app.extensions["metrics"] = metrics

    @app.before_request
    def _start_clock():
        g.metrics_start = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        start = g.pop("metrics_start", None)
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        metrics.observe_request(
            rule, request.method, response.status_code, None if start is None else time.perf_counter() - start
        )
        return response

    app.add_url_rule("/metrics", "metrics", metrics.render, methods=["GET"])
    return metrics
