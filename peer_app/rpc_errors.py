"""The link of a peer's gRPC chain that turns what a call raised into its status.

Servicers and the links inside this one raise P2PError (common/errors.py); here it becomes the
call's status code with its exact name in the trailing metadata (ERROR_NAME_KEY), so the
client rebuilds the same class (common.errors.from_rpc_error). A bug becomes one clean
INTERNAL, its traceback in this peer's log only; a client that went away marks the call cut.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import grpc

from common.errors import ERROR_NAME_KEY, P2PError
from peer_app.interceptor import CallInterceptor, RpcCall

log = logging.getLogger(__name__)


def abort(context: grpc.ServicerContext, err: P2PError) -> NoReturn:
    """End the call with err's status code, naming the exact error for clients."""
    context.set_trailing_metadata(((ERROR_NAME_KEY, err.name),))
    context.abort(err.grpc_code, err.detail)
    raise AssertionError("grpc's abort always raises")  # pragma: no cover


class ErrorMapping(CallInterceptor):
    """P2PError to status + error name; a bug to INTERNAL; a client gone to a cut call."""

    @contextmanager
    def around(self, call: RpcCall, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        except P2PError as err:
            call.error = err
            abort(context, err)
        except (grpc.RpcError, GeneratorExit):
            # grpc raises RpcError out of a read when the client is gone, and closes a
            # response stream it stopped taking (GeneratorExit): nothing to answer
            call.cut = True
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: one clean INTERNAL, the details in the log only
            log.error("%s from %s failed", call.method, call.peer, exc_info=exc)
            call.error = P2PError(f"{call.method} failed on this peer (internal error); its log says why")
            abort(context, call.error)
