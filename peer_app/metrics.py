"""A peer's own metrics: transfer bytes counted in the gRPC process, shown by the REST app."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from common.errors import Busy, Forbidden, Unauthorized
from common.rpc import FILE_TRANSFER
from peer_app.interceptor import CallHook, RpcCall
from peer_app.state import TransferTotals

RESPONSE_STREAMS = ("Download", "DummyDownload", "Lane")  # bytes leave this peer ("Lane": the fast lane's sendfile)
REQUEST_STREAMS = ("Upload", "DummyUpload")  # bytes arrive at this peer


class TransferCounter(CallHook):
    """Adds each finished (or cut) FileTransfer call's bytes to TransferTotals: one write per call."""

    def __init__(self, totals: TransferTotals) -> None:
        self.totals = totals

    def ended(self, call: RpcCall) -> None:
        if call.service != FILE_TRANSFER:
            return
        if isinstance(call.error, (Busy, Unauthorized, Forbidden)) and not call.sent + call.received:
            return  # refused at once, nothing handled: a flood of refusals costs no SQLite writes
        self.totals.add(call.method, call.sent + call.received)


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
