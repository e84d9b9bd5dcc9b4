"""`launcher.py logs`: the programs' logs and supervisord's start/exit events, merged in time order.

Every line is prefixed by its program (`peer1-rest| ...`), supervisord's by `supervisord| `.
History is merged by the timestamps the lines carry (gunicorn's error and access logs, Python
logging, supervisord: four formats); a line without one (a traceback's) stays with the line
before it. Following (-f) prints lines as they arrive, from every file at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# supervisord's lines about a program's life: spawned, entered RUNNING, exited, stopped, gave up, ...
_EVENT = re.compile(r" (INFO|WARN|CRIT) (spawned|success|exited|stopped|gave up|waiting for|spawnerr|killing)\b")
_STAMPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\]"), "%Y-%m-%d %H:%M:%S %z"),  # gunicorn
    (re.compile(r"^\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]"), "%d/%b/%Y:%H:%M:%S %z"),  # access
    (re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"), "%Y-%m-%d %H:%M:%S,%f"),  # logging, supervisord
]
HISTORY_BYTES = 4 * 1024 * 1024  # read at most this much of a log's end for its history


def timestamp(line: str) -> float | None:
    """Seconds since the epoch of the time a log line starts with; None if it has none."""
    for pattern, fmt in _STAMPS:
        match = pattern.match(line)
        if match:
            try:
                return datetime.strptime(match.group(1), fmt).timestamp()  # naive: local time, as written
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class LogSource:
    label: str  # the prefix: a program's name, or "supervisord"
    path: Path
    keep: Callable[[str], bool] = lambda line: True


def supervisord_events(programs: list[str]) -> Callable[[str], bool]:
    """Keep supervisord's lines about one of programs starting, running, exiting or being stopped."""
    names = [f"'{p}'" for p in programs] + [f" {p} " for p in programs] + [f" {p}:" for p in programs]

    def keep(line: str) -> bool:
        return bool(_EVENT.search(line)) and any(n in line for n in names)

    return keep


def _tail(source: LogSource, lines: int) -> tuple[list[str], int]:
    """The last `lines` kept lines of source, and the file's size (where following starts)."""
    try:
        with open(source.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - HISTORY_BYTES))
            data = fh.read()
    except OSError:
        return [], 0
    text = data.decode("utf-8", "replace").splitlines()
    if size > HISTORY_BYTES:
        text = text[1:]  # the first line is cut
    return [line for line in text if source.keep(line)][-lines:] if lines else [], size


def history(sources: list[LogSource], lines: int) -> tuple[list[str], dict[Path, int]]:
    """The last lines of every source merged by time, and where each file ends."""
    records: list[tuple[float, int, str]] = []
    offsets: dict[Path, int] = {}
    for order, source in enumerate(sources):
        tail, offsets[source.path] = _tail(source, lines)
        last = 0.0
        for line in tail:
            last = timestamp(line) or last
            records.append((last, order, f"{source.label}| {line}"))
    records.sort(key=lambda r: (r[0], r[1]))  # stable: a file's own order is kept within a second
    return [r[2] for r in records], offsets


def follow(
    sources: list[LogSource],
    offsets: dict[Path, int],
    stop: Callable[[], bool] = lambda: False,
    poll: float = 0.2,
) -> Iterator[str]:
    """Lines appended to any source from offsets on, as they come, until stop()."""
    while not stop():
        quiet = True
        for source in sources:
            try:
                with open(source.path, "rb") as fh:
                    size = fh.seek(0, 2)
                    start = offsets.get(source.path, 0)
                    if size < start:
                        start = 0  # rotated or truncated
                    fh.seek(start)
                    chunk = fh.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            offsets[source.path] = start + end
            for line in chunk[:end].decode("utf-8", "replace").splitlines():
                if source.keep(line):
                    quiet = False
                    yield f"{source.label}| {line}"
        if quiet:
            time.sleep(poll)
