"""A cancel token: one request of a download, stoppable at once from another thread.

Whoever starts something that blocks (a gRPC call, a lane socket's recv) registers how to
interrupt it for as long as it runs (`with cancel.hook(call.cancel): ...`); `cancel()` runs
every registered hook and any registered later, so a request stopped between two steps
stops at the next one. The scheduler cancels a request when its range was finished
elsewhere, when its holder lost its pace, or when the whole download stops.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Cancel:
    """Set once; hooks registered while set run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], object]] = []
        self.reason = ""  # why it was cancelled ("" while it was not)

    @property
    def cancelled(self) -> bool:
        return bool(self.reason)

    def cancel(self, reason: str) -> None:
        """Stop whatever is registered now or later; the first reason stays."""
        with self._lock:
            if self.reason:
                return
            self.reason = reason or "cancelled"
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _quietly(hook)

    @contextlib.contextmanager
    def hook(self, stop: Callable[[], object]) -> Iterator[None]:
        """Within the block, cancel() calls stop (at once if already cancelled)."""
        with self._lock:
            late = bool(self.reason)
            if not late:
                self._hooks.append(stop)
        if late:
            _quietly(stop)
        try:
            yield
        finally:
            with self._lock:
                if stop in self._hooks:
                    self._hooks.remove(stop)


def _quietly(stop: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # a socket already closed, a call already over: stopped either way
        stop()
