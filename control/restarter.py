"""A supervisord event listener that brings back programs supervisord gave up on (FATAL).

    [eventlistener:p2p-restarter]
    command=python -m control.restarter
    events=PROCESS_STATE_FATAL,PROCESS_STATE_RUNNING

Why: supervisord's own retries (`startsecs`, `startretries`) end a crash loop in FATAL after a
few seconds, which is what lets `up` and `status` report a node that cannot start, with its
log tail. But a node killed again and again before it has stayed up `startsecs` seconds (a
crash storm: say, the Maestro killed as soon as it answers) looks the same to supervisord and
would stay down after its fourth quick death, until someone runs `start`.

This listener starts a FATAL program again after a delay that doubles each time (1 s, 2 s,
4 s ... at most 30 s) and starts over once the program has stayed RUNNING for a minute. So
a crash storm never keeps a node down for good, and a genuine crash loop still spends most of
its time in FATAL (seen by `up` and `status`) and costs one start every half minute.
A program is started only while it is still FATAL: one the operator stopped stays stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from supervisor import childutils

log = logging.getLogger("p2p-restarter")

EVENTS = ("PROCESS_STATE_FATAL", "PROCESS_STATE_RUNNING")
FIRST_DELAY = 1.0  # seconds before the first start after a FATAL
MAX_DELAY = 30.0  # the delay doubles up to this
RESET_AFTER = 60.0  # a program RUNNING this long before its next FATAL starts again from FIRST_DELAY


class Backoff:
    """The delay before each program's next start; pure, with an injected clock."""

    def __init__(
        self,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
        reset_after: float = RESET_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first = first
        self.cap = cap
        self.reset_after = reset_after
        self.clock = clock
        self.fatals: dict[str, int] = {}
        self.running_since: dict[str, float] = {}

    def running(self, program: str) -> None:
        """The program entered RUNNING (it stayed up startsecs)."""
        self.running_since[program] = self.clock()

    def fatal(self, program: str) -> float:
        """The program went FATAL: seconds to wait before starting it again."""
        since = self.running_since.pop(program, None)
        if since is not None and self.clock() - since >= self.reset_after:
            self.fatals[program] = 0
        n = self.fatals.get(program, 0)
        self.fatals[program] = n + 1
        return min(self.first * 2**n, self.cap)


def program_name(headers: dict[str, str]) -> str:
    """group:name, the way supervisord's XML-RPC names a process."""
    return f"{headers['groupname']}:{headers['processname']}"


class Restarter:
    """Reads supervisord events; schedules the start of each FATAL program."""

    def __init__(
        self,
        start: Callable[[str], bool],
        backoff: Backoff | None = None,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.start = start  # starts the program if it is still FATAL; True if it did
        self.backoff = backoff or Backoff()
        self.schedule = schedule or _timer

    def handle(self, event: str, payload: str) -> None:
        headers, _ = childutils.eventdata(payload + "\n")
        program = program_name(headers)
        if event == "PROCESS_STATE_RUNNING":
            self.backoff.running(program)
        elif event == "PROCESS_STATE_FATAL":
            delay = self.backoff.fatal(program)
            log.warning("%s is FATAL; starting it again in %gs", program, delay)
            self.schedule(delay, lambda: self._start(program))

    def _start(self, program: str) -> None:
        try:
            if self.start(program):
                log.warning("%s started again", program)
        except Exception as err:  # noqa: BLE001 - a timer thread must not die silently
            log.warning("could not start %s: %s", program, err)

    def serve(self, stdin: TextIO, stdout: TextIO) -> None:
        """The event listener protocol: READY, read one event, handle it, OK; until stdin closes."""
        while True:
            childutils.listener.ready(stdout)
            line = stdin.readline()
            if not line:  # supervisord is gone
                return
            headers = childutils.get_headers(line)
            payload = stdin.read(int(headers["len"]))
            try:
                self.handle(headers["eventname"], payload)
            finally:
                childutils.listener.ok(stdout)


def _timer(delay: float, fn: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


def supervisor_start(env: dict[str, str]) -> Callable[[str], bool]:
    """Start a program through supervisord's XML-RPC, only if it is still FATAL."""

    def start(program: str) -> bool:
        rpc = childutils.getRPCInterface(env)  # one proxy per call: timers run on their own threads
        if rpc.supervisor.getProcessInfo(program)["statename"] != "FATAL":
            return False
        rpc.supervisor.startProcess(program, False)
        return True

    return start


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Restarter(supervisor_start(dict(os.environ))).serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
