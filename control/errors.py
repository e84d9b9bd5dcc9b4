"""Errors of the control plane; launcher.py maps each to one stderr line and an exit code."""

from __future__ import annotations


class LauncherError(Exception):
    """Base of every error the launcher reports without a traceback."""

    exit_code = 1

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])

    def lines(self) -> list[str]:
        """The lines to print on stderr: the message, then any details."""
        return [self.message, *self.details]


class TopologyError(LauncherError):
    """The topology is invalid: fix every listed key and run the command again."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s), nothing started", [f"{source}: {p}" for p in problems])
        self.problems = list(problems)

    def lines(self) -> list[str]:
        return self.details


class NotRunning(LauncherError):
    """The network's supervisord is not running: start it with `launcher.py up`."""

    exit_code = 3


class UnknownNode(LauncherError):
    """No node of that name in the topology."""

    exit_code = 2


class NodesDown(LauncherError):
    """Some nodes did not come up (or go down) in time; their log tails follow."""

    exit_code = 1


class RemoteNode(LauncherError):
    """The node runs on another host: run the command there."""

    exit_code = 2
