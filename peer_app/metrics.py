"""A peer's own metrics: transfer bytes counted in the gRPC process, shown by the REST app."""

from __future__ import annotations

from common.errors import Busy, Forbidden, Unauthorized
from common.rpc import FILE_TRANSFER
from peer_app.interceptor import CallHook, RpcCall
from peer_app.scrape import REQUEST_STREAMS, RESPONSE_STREAMS, transfer_families
from peer_app.state import TransferTotals

__all__ = ["REQUEST_STREAMS", "RESPONSE_STREAMS", "TransferCounter", "transfer_families"]


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
