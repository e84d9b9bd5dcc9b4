"""A peer's own metrics: transfer bytes counted in the gRPC process, shown by the REST app."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily

from peer_app.state import TransferTotals

RESPONSE_STREAMS = ("Download", "DummyDownload")  # bytes leave this peer
REQUEST_STREAMS = ("Upload", "DummyUpload")  # bytes arrive at this peer


def count_transfer_bytes(servicer: object, totals: TransferTotals) -> None:
    """Wrap the servicer's four RPCs so each call adds its chunk bytes to totals when it ends.

    Call before the servicer is added to a server (gRPC binds the methods then).
    """
    for rpc in RESPONSE_STREAMS:
        setattr(servicer, rpc, _counted_response(rpc, getattr(servicer, rpc), totals))
    for rpc in REQUEST_STREAMS:
        setattr(servicer, rpc, _counted_request(rpc, getattr(servicer, rpc), totals))


def _counted_response(rpc: str, method: Callable, totals: TransferTotals) -> Callable:
    def handler(request, context) -> Iterator:
        sent = 0
        try:
            for chunk in method(request, context):
                sent += len(chunk.data)
                yield chunk
        finally:
            totals.add(rpc, sent)

    return handler


def _counted_request(rpc: str, method: Callable, totals: TransferTotals) -> Callable:
    def handler(request_iterator, context):
        received = 0

        def counting():
            nonlocal received
            for chunk in request_iterator:
                received += len(chunk.data)
                yield chunk

        try:
            return method(counting(), context)
        finally:
            totals.add(rpc, received)

    return handler


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
