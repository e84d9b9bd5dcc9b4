"""What changes when gunicorn's gevent worker has monkey-patched this process (one home for it).

Under the gevent worker every request, and every call a peer makes while it waits on its
friends, is a greenlet in one OS thread: waiting costs no thread, but anything that blocks
without yielding (a long sha256, a SQLite busy wait) stalls every request of that worker.
Elsewhere (the gRPC process, the CLI, tests, the gthread worker) these are the plain threading
behaviours. Nothing here imports gevent unless gevent is already loaded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def patched() -> bool:
    """True when gevent has monkey-patched threading in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def os_thread_local() -> threading.local:
    """A threading.local whose values are per OS thread, even when gevent patched threading.

    Under gevent, greenlets of one worker then share the value (a SQLite connection, say):
    right for objects used only by calls that never yield to another greenlet.
    """
    if patched():
        from gevent import monkey

        return monkey.get_original("threading", "local")()
    return threading.local()


def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """Call fn(*args); under gevent on a real OS thread, so other greenlets keep running meanwhile."""
    if patched():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)


def take_turns() -> None:
    """Let the worker's other greenlets run before this one goes on (under gevent; else nothing).

    gunicorn's gevent worker reads a keep-alive connection's next request as soon as it is
    there: a few busy connections then keep the worker to themselves and the rest wait (the
    Maestro's /locate under 64 connections: p50 0.6 ms, p99 0.9 s). A turn per request keeps it
    first come, first served.
    """
    if patched():
        import gevent

        gevent.sleep(0)
