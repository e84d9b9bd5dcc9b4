"""A peer's own metrics: transfer bytes counted in the gRPC process (peer_app/accounting.py), shown by the REST app."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from peer_app.state import TransferTotals

RESPONSE_STREAMS = ("Download", "DummyDownload", "Lane")  # bytes leave this peer ("Lane": the fast lane's sendfile)
REQUEST_STREAMS = ("Upload", "DummyUpload")  # bytes arrive at this peer


def transfer_families(totals: TransferTotals) -> list[CounterMetricFamily]:
    """p2p_transfer_bytes_total and p2p_transfers_total by rpc and direction, from SQLite."""
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
