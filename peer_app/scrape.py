"""The transfer totals the gRPC process counts, as the REST app's /metrics shows them.

Apart from peer_app/accounting.py (the gRPC side's counting) so that the REST workers do not import
grpc (~15 MiB of each worker's memory), nor the gRPC process prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peer_app.state import TransferTotals

if TYPE_CHECKING:  # imported when /metrics is scraped: the gRPC process imports this module too
    from prometheus_client.core import CounterMetricFamily

RESPONSE_STREAMS = ("Download", "DummyDownload", "Lane")  # bytes leave this peer ("Lane": the fast lane's sendfile)
REQUEST_STREAMS = ("Upload", "DummyUpload")  # bytes arrive at this peer


def transfer_families(totals: TransferTotals) -> list[CounterMetricFamily]:
    """p2p_transfer_bytes_total and p2p_transfers_total by rpc and direction, from SQLite."""
    from prometheus_client.core import CounterMetricFamily

    moved = CounterMetricFamily(
        "p2p_transfer_bytes", "bytes streamed by this peer's gRPC server", labels=["rpc", "direction"]
    )
    calls = CounterMetricFamily(
        "p2p_transfers", "transfer calls handled by this peer's gRPC server", labels=["rpc", "direction"]
    )
    counts = totals.all()
    for rpc in RESPONSE_STREAMS + REQUEST_STREAMS:
        nbytes, ncalls = counts.get(rpc, (0, 0))
        direction = "sent" if rpc in RESPONSE_STREAMS else "received"
        moved.add_metric([rpc, direction], nbytes)
        calls.add_metric([rpc, direction], ncalls)
    return [moved, calls]
