"""One line in the peer's gRPC log per finished transfer call: what, how much, how fast, with whom.

    Download archivo1.txt: 8.00 MiB in 0.02 s (419 MB/s) to ipv4:127.0.0.1:40522 (bytes 8388608-16777215)
    Upload informe.pdf: failed after 1.00 MiB in 0.10 s: data_loss: the bytes received do not match ...

A hook of the one gRPC interceptor (peer_app/interceptor.py); health checks and reflection are not
transfers and are not logged. A call that was cut (by its client, or by this peer's idle/stall
watchdog) has its line from the interceptor itself ("Download from ipv4:… cut by this peer: …").
"""

from __future__ import annotations

import logging

from common.units import format_rate, format_seconds, format_size
from peer_app.interceptor import CallHook, RpcCall
from peer_app.metrics import FILE_TRANSFER, RESPONSE_STREAMS

log = logging.getLogger("p2pnet.transfers")


def transfer_line(call: RpcCall) -> str:
    """The log line of one finished FileTransfer call."""
    sending = call.method in RESPONSE_STREAMS
    moved = call.sent if sending else call.received
    seconds = call.seconds
    amount = f"{format_size(moved)} in {format_seconds(seconds)} ({format_rate(moved, seconds)})"
    who = f"{'to' if sending else 'from'} {call.peer}"
    what = f"{call.method} {call.file or '-'}"
    if call.error is not None:
        return f"{what}: failed after {amount} {who}: {call.error.name}: {call.error.detail}"
    span = call.extra.get("range")
    return f"{what}: {amount} {who}" + (f" (bytes {span[0]}-{span[1] - 1})" if span else "")


class TransferLog(CallHook):
    def ended(self, call: RpcCall) -> None:
        if call.service == FILE_TRANSFER and not call.cut:
            log.log(logging.WARNING if call.error is not None else logging.INFO, "%s", transfer_line(call))
