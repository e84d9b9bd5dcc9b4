"""The processes of a network seen from /proc: their tree, CPU time and memory (for the benchmarks)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def descendants(pids: list[int]) -> list[int]:
    """pids and every process below them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of pids (and their reaped children) in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def idle_cpu_rate(pids: list[int], seconds: float = 1.0) -> float:
    """CPU seconds per second the processes use while nobody asks them anything."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def kib_field(pattern: str, text: str) -> int:
    """The number a /proc line matching pattern (one group) holds; AttributeError when it is absent."""
    match = re.search(pattern, text, re.M)
    if match is None:
        raise AttributeError(pattern)
    return int(match.group(1))


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """Sum of RSS and PSS of pids, MiB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, AttributeError):
            rss += kib_field(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            pss += kib_field(r"^Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text())
    return rss / 1024, pss / 1024


def peak_rss_kib(pid: int | str = "self") -> int:
    """A live process's peak resident set (VmHWM), in KiB."""
    with contextlib.suppress(OSError, AttributeError):
        return kib_field(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return 0
