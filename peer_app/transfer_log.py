"""The peer's gRPC log lines: one per finished call of FileTransfer, one per call cut short.

    Download archivo1.txt: 8.00 MiB in 0.02 s (419 MB/s) to ipv4:127.0.0.1:40522 (bytes 8388608-16777215)
    Upload informe.pdf: failed after 1.00 MiB in 0.10 s: data_loss: the bytes received do not match ...
    Download from ipv4:127.0.0.1:40522 cut by this peer: its client kept it waiting 10.0s ... (0 bytes in, 65536 out)
    Upload from ipv4:127.0.0.1:40530 cut by the client (1048576 bytes in, 0 out)

Written by the accounting link of the gRPC chain (peer_app/accounting.py); health checks and
reflection are not transfers and have a line only when cut.
"""

from __future__ import annotations

from common.units import format_rate, format_seconds, format_size
from peer_app.interceptor import RpcCall
from peer_app.scrape import RESPONSE_STREAMS


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
    span = call.span
    return f"{what}: {amount} {who}" + (f" (bytes {span[0]}-{span[1] - 1})" if span else "")


def cut_line(call: RpcCall) -> str:
    """The log line of a call that ended early: cut by this peer (and why) or by its client."""
    by = f"this peer: {call.cut_reason}" if call.cut_reason else "the client"
    return f"{call.method} from {call.peer} cut by {by} ({call.received} bytes in, {call.sent} out)"
