"""What a transfer shows a person: a live bar (bytes, rate, ETA) on a terminal, one summary line at the end.

The bar is tqdm's, drawn on stderr and only when stderr is a terminal, so a pipe or a file gets
the summary line alone, and `p2p download x --json | jq` still shows progress. tqdm is imported
only when a bar is drawn: a command in a script pays nothing for it at start-up.
"""

from __future__ import annotations

import shutil
import sys
from typing import IO, Any

from common.units import format_rate, format_seconds, format_size


class Progress:
    """Counts a transfer's bytes; draws a bar while it runs when `stream` is a terminal.

    Give `total` (and `initial`, bytes already there from an earlier run) up front, or later
    through start() once they are known (a download learns them from its holders).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        initial: int = 0,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.total = total
        self.initial = initial
        self.count = 0  # bytes moved in this run
        self._bar: Any = None
        if total is not None:
            self.start(total, initial)

    def start(self, total: int | None, initial: int = 0) -> None:
        """The transfer's size and how much of it an earlier run already has (the bar starts there)."""
        self.total, self.initial = total, initial
        if not self.enabled or self._bar is not None:
            return
        from tqdm import tqdm  # only on a terminal (start-up time of scripted commands)

        size = shutil.get_terminal_size()
        self._bar = tqdm(
            total=total or None,
            initial=initial,
            desc=self.label,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,  # MB and MB/s, as the summary line's rate
            file=self.stream,
            # A terminal that reports no size (0x0, as some ptys do) would hide tqdm's bar: 80x24 then.
            ncols=min(100, size.columns),
            nrows=size.lines,
            mininterval=0.1,
            leave=False,  # the summary line replaces it
        )

    def update(self, n: int) -> None:
        self.count += n
        if self.enabled and self._bar is None:
            self.start(self.total, self.initial)
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def throughput(nbytes: int, seconds: float) -> str:
    """`200.0 MiB in 0.42 s (499 MB/s)`: what a summary line says about speed (no rate under 1 MiB)."""
    if nbytes < 1024 * 1024:
        return f"{format_size(nbytes)} in {format_seconds(seconds)}"
    return f"{format_size(nbytes)} in {format_seconds(seconds)} ({format_rate(nbytes, seconds)})"
