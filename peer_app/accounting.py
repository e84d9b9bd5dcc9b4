"""The link of a peer's gRPC chain that counts: bytes in and out, a log line per call, /metrics totals.

It comes first among the links that see a call's record (peer_app/grpc_server.py), so it sees
every call end, refused, failed or cut, once the links inside have said how (RpcCall.error,
cut, cut_reason).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from common.errors import Busy, Forbidden, Unauthorized
from common.rpc import FILE_TRANSFER
from peer_app.interceptor import CallInterceptor, RpcCall, closing, payload
from peer_app.state import TransferTotals
from peer_app.transfer_log import cut_line, transfer_line

log = logging.getLogger("p2pnet.transfers")


class Accounting(CallInterceptor):
    """Counts each call's `data` bytes; when it ends, logs it and adds a transfer's bytes to totals."""

    def __init__(self, totals: TransferTotals) -> None:
        self.totals = totals

    @contextmanager
    def around(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        finally:
            try:
                self._ended(call)
            except Exception:  # counting must not turn a finished call into an error
                log.exception("accounting of %s failed", call.method)

    def requests(self, call: RpcCall, requests: Iterator[Any]) -> Iterator[Any]:
        for message in requests:
            if not call.file:
                self._describe(call, message)
            call.received += payload(message)
            yield message

    def responses(self, call: RpcCall, responses: Iterator[Any]) -> Iterator[Any]:
        with closing(responses):
            for response in responses:
                call.sent += payload(response)
                yield response

    @staticmethod
    def _describe(call: RpcCall, message: object) -> None:
        """Note what a call asks for: its file and, for a ranged read, the bytes."""
        call.file = getattr(message, "filename", "") or ""
        length = getattr(message, "length", 0)
        if length:
            offset = getattr(message, "offset", 0)
            call.span = (offset, offset + length)

    def _ended(self, call: RpcCall) -> None:
        if call.cut:
            log.info("%s", cut_line(call))
        if call.service != FILE_TRANSFER:
            return
        if not call.cut:
            log.log(logging.WARNING if call.error is not None else logging.INFO, "%s", transfer_line(call))
        if isinstance(call.error, (Busy, Unauthorized, Forbidden)) and not call.sent + call.received:
            return  # refused at once, nothing handled: a flood of refusals costs no SQLite writes
        self.totals.add(call.method, call.sent + call.received)
