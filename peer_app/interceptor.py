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

import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from common.errors import ERROR_NAME_KEY, BadRequest, P2PError, Unavailable

if TYPE_CHECKING:
    from peer_app.admission import Progress

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[RpcCall | None] = contextvars.ContextVar("p2p_rpc_call", default=None)


def current_call() -> RpcCall | None:
    """The call the running handler serves (grpc runs each call in a context of its own)."""
    return _current.get()


@dataclass
class RpcCall:
    """One call as the interceptor saw it; hooks read (and may annotate) it."""

    service: str  # "p2pnet.FileTransfer"
    method: str  # "Download"
    peer: str  # the client's address as gRPC reports it ("ipv4:127.0.0.1:50312")
    metadata: dict[str, str | bytes] = field(default_factory=dict)  # the client's invocation metadata
    file: str = ""  # the file the call names (a request's `filename`, or an upload's first chunk's)
    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # bytes of `data` in the messages this peer sent
    received: int = 0  # bytes of `data` in the messages this peer received
    error: P2PError | None = None  # the error the call ended with, if any
    cut: bool = False  # the client went away (cancelled, deadline, connection lost)
    extra: dict[str, Any] = field(default_factory=dict)  # for hooks: anything worth a log line
    progress: Progress | None = None  # set by admission: the call's waits on its client, for the watchdog

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


def _describe(request: object, call: RpcCall) -> None:
    """Note what a one-message request asks for: its file and, for a ranged read, the bytes."""
    call.file = getattr(request, "filename", "") or ""
    length = getattr(request, "length", 0)
    if length:
        offset = getattr(request, "offset", 0)
        call.extra["range"] = (offset, offset + length)


def _payload(message: object) -> int:
    data = getattr(message, "data", None)
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class PeerInterceptor(grpc.ServerInterceptor):
    """Maps P2PError to status + error name, counts bytes, runs the hooks around every call.

    Every handler it returns reads its requests as a stream, even for a method that takes one
    request: so the hooks (admission, credentials) decide before a single byte is read, and a
    call refused there never waits on its client. pool_for(service) may name the thread pool
    a service's calls run in (None: the server's own), so transfers cannot starve health checks.
    """

    def __init__(
        self,
        hooks: Sequence[CallHook] = (),
        pool_for: Callable[[str], futures.ThreadPoolExecutor | None] = lambda service: None,
    ) -> None:
        self.hooks = list(hooks)
        self.pool_for = pool_for

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        metadata = dict(handler_call_details.invocation_metadata or ())
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream

        def new_call(context: grpc.ServicerContext) -> RpcCall:
            return RpcCall(service, method, context.peer(), metadata)

        if getattr(behavior, "experimental_non_blocking", False):
            wrapped = self._non_blocking(behavior, new_call, handler.request_streaming)
        elif handler.response_streaming:
            wrapped = self._streaming(behavior, new_call, handler.request_streaming)
        else:
            wrapped = self._single(behavior, new_call, handler.request_streaming)
        pool = self.pool_for(service)
        if pool is not None:
            wrapped.experimental_thread_pool = pool  # type: ignore[attr-defined]  # grpc's per-handler pool
        return _HANDLER_FACTORIES[(True, bool(handler.response_streaming))](
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    # -- the shapes of a handler: one response, a stream of them, or a non-blocking stream ---------
    def _single(self, behavior, new_call, request_streaming: bool):
        def handle(requests, context):
            call = new_call(context)
            with self._handled(call, context):
                self._start(call, context)
                return behavior(self._requests(requests, call, request_streaming), context)

        return handle

    def _streaming(self, behavior, new_call, request_streaming: bool):
        def handle(requests, context) -> Iterator:
            call = new_call(context)
            with self._handled(call, context):
                self._start(call, context)
                progress = call.progress
                for response in behavior(self._requests(requests, call, request_streaming), context):
                    size = _payload(response)
                    call.sent += size
                    if progress is None:
                        yield response
                        continue
                    progress.wait()  # until gRPC asks for the next one: the client made room for this one
                    yield response
                    progress.done(size)

        return handle

    def _non_blocking(self, behavior, new_call, request_streaming: bool):
        """A handler that answers through a callback and returns at once (grpc_health's Watch)."""

        def handle(requests, context, send_response_callback):
            call = new_call(context)
            with self._handled(call, context):
                self._start(call, context)
                return behavior(self._requests(requests, call, request_streaming), context, send_response_callback)

        handle.experimental_non_blocking = True  # type: ignore[attr-defined]
        return handle

    # -- helpers ------------------------------------------------------------------------------
    @contextmanager
    def _handled(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        """Run one call's handler: a P2PError or a bug ends it with a status; the hooks see its end.

        A grpc.RpcError (raised by grpc itself) or a GeneratorExit (a response stream closed
        before its end) means the client went away: the call is marked cut and grpc logs nothing.
        """
        _current.set(call)
        try:
            yield
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

    def _requests(self, requests: Iterator, call: RpcCall, streaming: bool):
        """The request stream as the servicer expects it: the stream itself, or its one message."""
        messages = self._count_in(requests, call)
        if streaming:
            return messages
        request = next(messages, None)
        if request is None:
            raise BadRequest(f"{call.method} takes one request message; the client sent none")
        _describe(request, call)
        return request

    @staticmethod
    def _count_in(requests: Iterator, call: RpcCall) -> Iterator:
        progress = call.progress
        while True:
            if progress is not None:
                progress.wait()
            try:
                message = next(requests)
            except StopIteration:
                if progress is not None:
                    if progress.cut:  # a cut can look like the end of the stream
                        raise Unavailable(f"cut: {progress.cut}") from None
                    progress.done(0)  # the client is done: what follows (storing, registering) is ours
                break
            size = _payload(message)
            call.received += size
            if not call.file:
                call.file = getattr(message, "filename", "") or ""
            if progress is not None:
                progress.done(size)
            yield message

    def _start(self, call: RpcCall, context: grpc.ServicerContext) -> None:
        for hook in self.hooks:
            hook.started(call, context)

    def _end(self, call: RpcCall) -> None:
        cut_here = call.progress.cut if call.progress is not None else None
        if cut_here:
            call.cut = True
            log.info(
                "%s from %s cut by this peer: %s (%d bytes in, %d out)",
                call.method,
                call.peer,
                cut_here,
                call.received,
                call.sent,
            )
        elif call.cut:
            log.info(
                "%s from %s cut by the client (%d bytes in, %d out)", call.method, call.peer, call.received, call.sent
            )
        for hook in self.hooks:
            try:
                hook.ended(call)
            except Exception:  # a hook's failure must not turn a finished call into an error
                log.exception("gRPC call hook %s failed after %s", type(hook).__name__, call.method)
