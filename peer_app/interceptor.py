"""What every gRPC call of a peer goes through: error mapping, byte counting, and hooks for more.

One grpc.ServerInterceptor (in the manner of grpc's examples/python/interceptors) wraps each
method handler, whatever its arity, so the servicer only does the work and raises P2PError:

- a P2PError ends the call with its status code and its exact name in the trailing metadata
  (ERROR_NAME_KEY), so the client rebuilds the same class (common.errors.from_rpc_error);
- the `data` bytes of every message in and out are counted on the call's RpcCall;
- hooks see each call start (and may refuse it by raising a P2PError: a credential check)
  and end (however it ended: a log line per transfer, the byte totals for /metrics).

To add cross-cutting work, write a CallHook and pass it to create_server (grpc_server.py);
do not wrap servicer methods again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from common.errors import ERROR_NAME_KEY, P2PError

log = logging.getLogger(__name__)


@dataclass
class RpcCall:
    """One call as the interceptor saw it; hooks read (and may annotate) it."""

    service: str  # "p2pnet.FileTransfer"
    method: str  # "Download"
    peer: str  # the client's address as gRPC reports it ("ipv4:127.0.0.1:50312")
    metadata: dict[str, str | bytes] = field(default_factory=dict)  # the client's invocation metadata
    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # bytes of `data` in the messages this peer sent
    received: int = 0  # bytes of `data` in the messages this peer received
    error: P2PError | None = None  # the error the call ended with, if any
    cut: bool = False  # the client went away (cancelled, deadline, connection lost)
    extra: dict[str, Any] = field(default_factory=dict)  # for hooks: anything worth a log line

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class CallHook:
    """Base class of the interceptor's hooks; override what you need."""

    def started(self, call: RpcCall, context: grpc.ServicerContext) -> None:
        """Before the servicer runs; raise a P2PError to refuse the call with that error."""

    def ended(self, call: RpcCall) -> None:
        """After the call ended (done, refused, failed or cut); must not raise."""


def abort(context: grpc.ServicerContext, err: P2PError) -> NoReturn:
    """End the call with err's status code, naming the exact error for clients."""
    context.set_trailing_metadata(((ERROR_NAME_KEY, err.name),))
    context.abort(err.grpc_code, err.detail)
    raise AssertionError("grpc's abort always raises")  # pragma: no cover


def _unexpected(call: RpcCall, exc: Exception) -> P2PError:
    """Log an error the servicer did not expect; return what the client sees: no path, no traceback."""
    log.error("%s from %s failed", call.method, call.peer, exc_info=exc)
    return P2PError(f"{call.method} failed on this peer (internal error); its log says why")


def _payload(message: object) -> int:
    data = getattr(message, "data", None)
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class PeerInterceptor(grpc.ServerInterceptor):
    """Maps P2PError to status + error name, counts bytes, runs the hooks around every call."""

    def __init__(self, hooks: Sequence[CallHook] = ()) -> None:
        self.hooks = list(hooks)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        metadata = dict(handler_call_details.invocation_metadata or ())
        kind = (bool(handler.request_streaming), bool(handler.response_streaming))
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream

        def new_call(context: grpc.ServicerContext) -> RpcCall:
            return RpcCall(service, method, context.peer(), metadata)

        wrap = self._streaming if handler.response_streaming else self._single
        return _HANDLER_FACTORIES[kind](
            wrap(behavior, new_call, handler.request_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    # -- the two shapes of a handler: one response, or a stream of them -------------------------
    def _single(self, behavior, new_call, request_streaming: bool):
        def handle(request, context):
            call = new_call(context)
            if request_streaming:
                request = self._count_in(request, call)
            try:
                self._start(call, context)
                return behavior(request, context)
            except P2PError as err:
                call.error = err
                abort(context, err)
            except grpc.RpcError:
                call.cut = True  # grpc knows this error (it raised it) and logs nothing
                raise
            except Exception as exc:  # noqa: BLE001 - a bug: one clean INTERNAL, the details in the log only
                call.error = _unexpected(call, exc)
                abort(context, call.error)
            finally:
                self._end(call)

        return handle

    def _streaming(self, behavior, new_call, request_streaming: bool):
        def handle(request, context) -> Iterator:
            call = new_call(context)
            if request_streaming:
                request = self._count_in(request, call)
            try:
                self._start(call, context)
                for response in behavior(request, context):
                    call.sent += _payload(response)
                    yield response
            except P2PError as err:
                call.error = err
                abort(context, err)
            except (grpc.RpcError, GeneratorExit):
                call.cut = True
                raise
            except Exception as exc:  # noqa: BLE001 - a bug: one clean INTERNAL, the details in the log only
                call.error = _unexpected(call, exc)
                abort(context, call.error)
            finally:
                self._end(call)

        return handle

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _count_in(requests: Iterable, call: RpcCall) -> Iterator:
        for message in requests:
            call.received += _payload(message)
            yield message

    def _start(self, call: RpcCall, context: grpc.ServicerContext) -> None:
        for hook in self.hooks:
            hook.started(call, context)

    def _end(self, call: RpcCall) -> None:
        if call.cut:
            log.info(
                "%s from %s cut by the client (%d bytes in, %d out)", call.method, call.peer, call.received, call.sent
            )
        for hook in self.hooks:
            try:
                hook.ended(call)
            except Exception:  # a hook's failure must not turn a finished call into an error
                log.exception("gRPC call hook %s failed after %s", type(hook).__name__, call.method)
