"""What the links of a peer's gRPC interceptor chain share: the call's record and the handler shapes.

create_server (peer_app/grpc_server.py) chains small grpc.ServerInterceptors, one concern
each, with `grpc.server(interceptors=[...])` in the manner of grpc's
examples/python/interceptors. This module holds what they have in common:

- RpcCall, one call's record (who, what, bytes moved, how it ended): the first link of the
  chain opens it, every later link and the servicer read it through current_call();
- CallInterceptor, the base of the links: it wraps a method's handler once for every shape
  (one response, a response stream, grpc_health's non-blocking Watch), so a link only says
  what it does around the call (around), to the request messages (requests) and to the
  response messages (responses);
- OneRequest, the innermost link: it hands a one-request method its request, so every link
  outside it sees a request stream and runs before a single message is read (a caller
  refused there never waits on its client);
- ThreadPools, which runs each service's calls on its own thread pool.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.errors import BadRequest, P2PError

_current: contextvars.ContextVar[RpcCall | None] = contextvars.ContextVar("p2p_rpc_call", default=None)


def current_call() -> RpcCall | None:
    """The call the running handler serves, or None outside a call.

    grpc runs each call (its interceptors and its handler) in a contextvars.Context of its own,
    so the record the chain opened is found here by every link and by the servicer.
    """
    return _current.get()


@dataclass
class RpcCall:
    """One call as the chain sees it; each link fills in what it knows."""

    service: str  # "p2pnet.FileTransfer"
    method: str  # "Download"
    metadata: dict[str, str | bytes] = field(default_factory=dict)  # the client's invocation metadata
    peer: str = ""  # the client's address as gRPC reports it ("ipv4:127.0.0.1:50312")
    caller: str | None = None  # the authenticated principal (a peer's name or "@operator"), when checked
    file: str = ""  # the file the call names (a request's `filename`, or an upload's first chunk's)
    span: tuple[int, int] | None = None  # the byte range a ranged read asks for, [start, end)
    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # bytes of `data` in the messages this peer sent
    received: int = 0  # bytes of `data` in the messages this peer received
    error: P2PError | None = None  # the error the call ended with, if any
    cut: bool = False  # the call ended early: its client went away, or this peer cut it
    cut_reason: str = ""  # why this peer cut it (its client kept it waiting), "" otherwise

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def _open_call(details: grpc.HandlerCallDetails) -> RpcCall:
    """The record of the call being looked up, opened by the first link that sees it."""
    call = _current.get()
    if call is None:
        service, _, method = details.method.lstrip("/").rpartition("/")
        call = RpcCall(service, method, dict(details.invocation_metadata or ()))
        _current.set(call)
    return call


def payload(message: object) -> int:
    """Bytes of `data` a message carries (0 for messages without it)."""
    data = getattr(message, "data", None)
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0


@contextmanager
def closing(iterator: Iterator[Any]) -> Iterator[None]:
    """Close a response generator when a link's loop over it ends early (its client gone).

    So the inner links and the servicer finish (and give back what they hold) before this one.
    """
    try:
        yield
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    assert behavior is not None  # a handler has one of the four
    return behavior


def _rebuilt(
    handler: grpc.RpcMethodHandler, behavior: Callable[..., Any], *, request_streaming: bool
) -> grpc.RpcMethodHandler:
    """handler with a new behavior (grpc's per-behavior attributes carried over)."""
    for attribute in ("experimental_non_blocking", "experimental_thread_pool"):
        value = getattr(_behavior(handler), attribute, None)
        if value is not None and getattr(behavior, attribute, None) is None:
            setattr(behavior, attribute, value)
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(request_streaming, bool(handler.response_streaming))]
    return factory(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class CallInterceptor(grpc.ServerInterceptor):
    """One concern around every call; override around, requests and responses as needed.

    Links run outside OneRequest, so every handler they wrap takes a request stream.
    """

    def around(self, call: RpcCall, context: grpc.ServicerContext) -> AbstractContextManager[object]:
        """What spans the whole call, its response stream included; raise a P2PError to refuse it."""
        return nullcontext()

    def requests(self, call: RpcCall, requests: Iterator[Any]) -> Iterator[Any]:
        """The request messages as the next link reads them."""
        return requests

    def responses(self, call: RpcCall, responses: Iterator[Any]) -> Iterator[Any]:
        """The response messages as the previous link (at last grpc) takes them."""
        return responses

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if not handler.request_streaming:
            raise TypeError(f"{type(self).__name__} must come before OneRequest in the interceptor chain")
        call = _open_call(handler_call_details)
        behavior = _behavior(handler)
        if getattr(behavior, "experimental_non_blocking", False):
            wrapped = self._non_blocking(call, behavior)
        elif handler.response_streaming:
            wrapped = self._streaming(call, behavior)
        else:
            wrapped = self._single(call, behavior)
        return _rebuilt(handler, wrapped, request_streaming=True)

    def _single(self, call: RpcCall, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def handle(requests, context):
            call.peer = call.peer or context.peer()
            with self.around(call, context):
                return behavior(self.requests(call, requests), context)

        return handle

    def _streaming(self, call: RpcCall, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def handle(requests, context):
            call.peer = call.peer or context.peer()
            with self.around(call, context):
                # yield from: closing this stream (a client gone) closes the inner ones first
                yield from self.responses(call, behavior(self.requests(call, requests), context))

        return handle

    def _non_blocking(self, call: RpcCall, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A handler that answers through a callback and returns at once (grpc_health's Watch)."""

        def handle(requests, context, send_response_callback):
            call.peer = call.peer or context.peer()
            with self.around(call, context):
                return behavior(self.requests(call, requests), context, send_response_callback)

        return handle


class OneRequest(grpc.ServerInterceptor):
    """The innermost link: a method that takes one request reads it from a stream, when it runs.

    grpc reads a one-request method's message before it calls anything; as a stream, the links
    outside this one decide (credentials, admission) before a byte is read, and the wait for
    the request is watched like any other wait on the client.
    """

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        behavior = _behavior(handler)
        method = handler_call_details.method.rpartition("/")[2]

        def first(requests: Iterator[Any]) -> Any:
            request = next(requests, None)
            if request is None:
                raise BadRequest(f"{method} takes one request message; the client sent none")
            return request

        def handle(requests, context, *send_response_callback):  # the callback: a non-blocking handler's
            return behavior(first(requests), context, *send_response_callback)

        return _rebuilt(handler, handle, request_streaming=True)


class ThreadPools(grpc.ServerInterceptor):
    """Runs each service's calls on the pool pool_for(service) names (None: the server's own).

    So transfers, however many, cannot starve health checks and reflection of threads. grpc
    reads the pool from the handler it gets, so this link comes first in the chain.
    """

    def __init__(self, pool_for: Callable[[str], futures.ThreadPoolExecutor | None]) -> None:
        self.pool_for = pool_for

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        pool = self.pool_for(handler_call_details.method.lstrip("/").rpartition("/")[0])
        if pool is None:
            return handler
        behavior = _behavior(handler)

        def handle(*args):
            return behavior(*args)

        handle.experimental_thread_pool = pool  # type: ignore[attr-defined]  # grpc's per-handler pool
        return _rebuilt(handler, handle, request_streaming=handler.request_streaming)
