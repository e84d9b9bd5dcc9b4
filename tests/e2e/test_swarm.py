"""Downloads over real links: holders in network namespaces behind uplink caps (lab/swarm.py).

A slow holder does not hold up completion; a holder cut mid-piece is dropped within 2 s and its
pieces finish elsewhere; bytes raced in the endgame are dropped, never written twice; a download
stopped by Ctrl-C while racing resumes. The client is the library, run on the swarm's client host
by tests/e2e/swarm_client.py, which records every write into the partial file. Root only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.partial import PART_MARK
from lab.swarm import Swarm, unavailable
from tests.support import MiB, sha, wait_until

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"swarm test: {REASON}")

SIZE = 12 * MiB
MBIT = 125_000  # bytes per second


@pytest.fixture(scope="module")
def swarm(tmp_path_factory) -> Iterator[Swarm]:
    with Swarm(tmp_path_factory.mktemp("swarm"), ["h1", "h2", "h3"], {"f.bin": SIZE}) as lab:
        yield lab


@pytest.fixture
def out(swarm: Swarm, tmp_path: Path) -> Path:
    for holder in swarm.names:
        swarm.lab.heal(holder) if holder in swarm.lab.partitioned else None
        swarm.lab.cap(holder, None)
    return tmp_path / "f.bin"


class Client:
    """swarm_client.py on the client host: its announcements as they come, then its report."""

    def __init__(self, swarm: Swarm, out: Path, holders: list[str], **options) -> None:
        job = {"name": "f.bin", "out": str(out), "holders": [swarm.entry(h, "f.bin") for h in holders],
               "options": options}  # fmt: skip
        argv = [sys.executable, "-m", "tests.e2e.swarm_client", json.dumps(job)]
        self.proc = swarm.client(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def until(self, prefix: str, timeout: float = 30) -> str:
        """The next announcement starting with prefix (the lines before it are kept)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(
            f"no {prefix!r} from the client: {self.lines} {self.proc.stderr.read() if self.proc.stderr else ''}"
        )

    def report(self, timeout: float = 60) -> tuple[int, dict]:
        try:
            rest, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, err = self.proc.communicate()
            raise AssertionError(f"the download did not end in {timeout}s: {self.lines} {rest} {err}") from None
        lines = [line for line in (self.lines + rest.splitlines(keepends=True)) if line.startswith("{")]
        assert lines, (self.lines, rest, err)
        return self.proc.returncode, json.loads(lines[-1])


def journal_pieces(out: Path) -> int:
    journals = list(out.parent.glob(f".{out.name}{PART_MARK}*.journal"))
    return max((len(j.read_text().splitlines()) - 1 for j in journals), default=0)


def expected(swarm: Swarm) -> str:
    return swarm.content["f.bin"][1]


@pytest.mark.parametrize(
    "slow",
    [
        "2mbit",  # 40x slower and steady: its last requests are raced by the fast holder (endgame)
        "0.1mbit",  # 800x slower, its queue overflowing (TCP backs off for seconds): dropped by its own pace
    ],
)
def test_a_slow_holder_does_not_hold_up_completion(swarm, out, slow):
    swarm.lab.cap("h1", "80mbit")
    swarm.lab.cap("h2", slow)
    code, report = Client(swarm, out, ["h1", "h2"], piece_size=MiB).report()
    assert code == 0, report
    assert sha(out.read_bytes()) == expected(swarm)
    alone = SIZE / (80 * MBIT)
    # the fast holder's time, not the slow one's (the 0.1 Mbit/s holder's first MiB alone would take 84 s),
    # plus at most ~1 s for its pace to drop it: 3.03 s against 2.89 s failed once in CI with 1.0 here
    assert report["seconds"] < 1.5 * alone + 2.0, report
    assert report["sources"].get("h2", 0) < SIZE * 0.1 and report["twice"] == 0, report


def test_a_holder_cut_mid_piece_is_dropped_within_2s_and_its_pieces_finish_elsewhere(swarm, out):
    for holder in ("h1", "h2", "h3"):
        swarm.lab.cap(holder, "16mbit")
    client = Client(swarm, out, ["h1", "h2", "h3"], piece_size=MiB)
    client.until("started")
    wait_until(lambda: journal_pieces(out) >= 3, 20, interval=0.01, what="three pieces in")
    swarm.lab.partition("h3")  # silent drops, mid-way through its requests
    cut = time.monotonic()
    left = SIZE - journal_pieces(out) * MiB
    code, report = client.report()
    assert code == 0, report
    assert sha(out.read_bytes()) == expected(swarm)
    assert report["ended"] - cut < left / (2 * 16 * MBIT) + 2.0, report  # the others' time for the rest + 2 s
    lost = re.search(r"lost its pace: nothing for ([0-9.]+)s", report["trouble"].get("h3", ""))
    assert lost and float(lost.group(1)) <= 2.0, report  # its own pace dropped it, within 2 s of its last byte
    assert report["sources"]["h1"] + report["sources"]["h2"] > SIZE * 2 / 3 and report["twice"] == 0, report


def test_endgame_duplicates_are_dropped_and_never_written_twice(swarm, out):
    swarm.lab.cap("h1", "40mbit")
    swarm.lab.cap("h2", "4mbit")  # 10x slower: the fast one races its last requests
    duplicates = []
    for _ in range(3):  # a race the slow holder wins before the fast one's first byte duplicates nothing: again
        out.unlink(missing_ok=True)
        client = Client(swarm, out, ["h1", "h2"])
        client.until("race h1")
        code, report = client.report()
        assert code == 0, report
        assert sha(out.read_bytes()) == expected(swarm)
        assert report["twice"] == 0 and report["written"] == SIZE, report  # went into the file once ...
        assert sum(report["sources"].values()) == SIZE, report
        duplicates.append(report["duplicates"])
        if report["duplicates"]:
            break
    assert duplicates[-1] > 0, duplicates  # ... though bytes did arrive twice


def test_a_download_stopped_while_racing_resumes(swarm, out):
    swarm.lab.cap("h1", "40mbit")
    swarm.lab.cap("h2", "0.08mbit")  # its first requests are still in flight when the rest is done
    client = Client(swarm, out, ["h1", "h2"])
    client.until("race h1")
    fast = swarm.procs["h1"].pid
    os.kill(fast, signal.SIGSTOP)  # the race stays undecided ...
    try:
        client.proc.send_signal(signal.SIGINT)  # ... when the user presses Ctrl-C
        pressed = time.monotonic()
        code, report = client.report()
        took = time.monotonic() - pressed
    finally:
        os.kill(fast, signal.SIGCONT)
    assert code == 130 and "run the same download again to resume" in report["interrupted"], report
    assert took < 3.0, f"Ctrl-C took {took:.1f}s: a request to the stopped holder was waited for"
    assert report["twice"] == 0, report
    kept = journal_pieces(out)
    assert 0 < kept < SIZE // MiB and not out.exists()
    code, report = Client(swarm, out, ["h1", "h2"]).report()
    assert code == 0, report
    assert sha(out.read_bytes()) == expected(swarm)
    assert report["resumed"] == kept * MiB and report["twice"] == 0, report
