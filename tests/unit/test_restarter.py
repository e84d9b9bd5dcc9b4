"""The event listener that brings FATAL programs back: its delays and its protocol, no processes."""

from __future__ import annotations

import io

from control.restarter import Backoff, Restarter
from tests.support import Clock


def event(name: str, group: str, process: str, serial: int = 1) -> str:
    payload = f"processname:{process} groupname:{group} from_state:BACKOFF"
    head = f"ver:3.0 server:supervisor serial:{serial} pool:p2p-restarter poolserial:{serial} "
    head += f"eventname:{name} len:{len(payload)}\n"
    return head + payload


def test_the_delay_doubles_up_to_its_cap_for_a_program_that_keeps_failing():
    backoff = Backoff(first=1.0, cap=8.0, reset_after=60.0, clock=Clock())
    assert [backoff.fatal("maestro:maestro") for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.fatal("peer1:peer1-rest") == 1.0  # each program has its own count


def test_a_program_that_ran_for_a_while_starts_over_from_the_first_delay():
    clock = Clock()
    backoff = Backoff(first=1.0, cap=30.0, reset_after=60.0, clock=clock)
    assert [backoff.fatal("m:m") for _ in range(3)] == [1.0, 2.0, 4.0]
    backoff.running("m:m")
    clock.now += 10  # up 10 s only: still the same storm
    assert backoff.fatal("m:m") == 8.0
    backoff.running("m:m")
    clock.now += 61
    assert backoff.fatal("m:m") == 1.0


def test_a_fatal_event_schedules_a_start_of_that_program_after_the_delay():
    scheduled: list = []
    started: list[str] = []

    def start(program: str) -> bool:
        started.append(program)
        return True

    restarter = Restarter(
        start=start,
        backoff=Backoff(first=1.0, cap=30.0, clock=Clock()),
        schedule=lambda delay, fn: scheduled.append((delay, fn)),
    )
    stdin = io.StringIO(
        event("PROCESS_STATE_FATAL", "maestro", "maestro", 1) + event("PROCESS_STATE_FATAL", "maestro", "maestro", 2)
    )
    stdout = io.StringIO()
    restarter.serve(stdin, stdout)  # returns when stdin closes, as when supervisord goes away
    assert [delay for delay, _ in scheduled] == [1.0, 2.0]
    assert started == []  # nothing starts before its delay
    scheduled[0][1]()
    assert started == ["maestro:maestro"]
    # The protocol: READY before each event, an OK result after each.
    assert stdout.getvalue().count("READY\n") == 3
    assert stdout.getvalue().count("RESULT 2\nOK") == 2


def test_a_program_no_longer_fatal_is_left_alone_and_a_failing_start_is_only_logged(caplog):
    calls = []

    def start(program: str) -> bool:
        calls.append(program)
        if program == "boom:boom":
            raise OSError("supervisord went away")
        return False  # the operator stopped it meanwhile: not FATAL any more

    scheduled = []
    restarter = Restarter(start=start, schedule=lambda delay, fn: scheduled.append(fn))
    restarter.serve(
        io.StringIO(event("PROCESS_STATE_FATAL", "peer1", "peer1-rest") + event("PROCESS_STATE_FATAL", "boom", "boom")),
        io.StringIO(),
    )
    for fn in scheduled:
        fn()
    assert calls == ["peer1:peer1-rest", "boom:boom"]
    assert "could not start boom:boom" in caplog.text
