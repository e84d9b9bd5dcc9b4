"""/metrics over real gunicorn workers: requests summed across workers, gauges from the Maestro."""

from __future__ import annotations

import os
import re
from concurrent import futures

import requests

from common.config import Settings
from common.gunicorn_conf import metrics_dir
from tests.support import metric_value as value
from tests.support import wait_until


def test_metrics_sum_requests_over_two_gunicorn_workers(network):
    nodes = network(
        ["peer1", "peer2"],
        settings=Settings(heartbeat_interval=0.5, request_timeout=1.0, rest_workers=2, rest_threads=2),
    )
    maestro, peer = nodes["maestro"].url, nodes["peer1"].url

    def hit(url: str) -> int:
        s = requests.Session()
        for _ in range(10):
            s.get(url + "/locate", params={"file": "missing.txt"}, timeout=5)
        return 10

    # Many connections at once, so both workers answer some of them.
    with futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hit, [maestro] * 8)) == 80
        assert (
            sum(
                pool.map(
                    lambda _: (
                        requests.get(peer + "/search", params={"query": "zzz", "ttl": "1"}, timeout=5).status_code
                    ),
                    range(12),
                )
            )
            == 200 * 12
        )
    folder = metrics_dir(nodes["maestro"].config.run_dir, "maestro")
    writers = {re.sub(r"\D", "", n) for n in os.listdir(folder)}
    assert len(writers) >= 2, f"one worker answered everything: {os.listdir(folder)}"
    text = requests.get(maestro + "/metrics", timeout=5).text
    assert value(text, "p2p_http_requests_total", endpoint="/locate", method="GET", status="404") == 80
    wait_until(
        lambda: value(requests.get(maestro + "/metrics", timeout=5).text, "p2p_peers_alive") == 2,
        what="both peers alive in the Maestro gauges",
    )
    peer_text = requests.get(peer + "/metrics", timeout=5).text
    assert value(peer_text, "p2p_search_handled_total") == 12
    assert value(peer_text, "p2p_http_requests_total", endpoint="/search", method="GET", status="200") == 12
