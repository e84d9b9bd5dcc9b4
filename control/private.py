"""Folders only this user may enter: the run folder and the fallback folder of supervisord's socket.

A network's run folder holds its configs, SQLite files, logs and usually supervisord's socket;
when the socket's path would be too long for AF_UNIX, the socket moves to a short folder under
/tmp named after the user. Anyone may create a name under /tmp first, so before the launcher
puts a socket there or talks to one, the folder must be a real directory (not a link), owned
by this user and closed to everyone else. Otherwise the launcher refuses with one line rather
than hand its XML-RPC calls to whoever made the folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from control.errors import LauncherError

RUNTIME_ENV = "P2P_RUNTIME_DIR"  # overrides the fallback socket folder (tests; unusual systems)


class NotPrivate(LauncherError):
    """A folder that must be private to this user is not; the message says which and how."""


def runtime_dir() -> Path:
    """The short per-user folder for sockets whose run-folder path is too long: /tmp/p2pnet-<uid>."""
    override = os.environ.get(RUNTIME_ENV)
    return Path(override) if override else Path("/tmp") / f"p2pnet-{os.geteuid()}"


def check_private(path: Path) -> None:
    """Raise NotPrivate unless path is a directory (not a link) of this user that nobody else can write to."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotPrivate(f"{path} does not exist") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise NotPrivate(f"{path} is not a directory but a {_kind(st)}; remove it and run the command again")
    if st.st_uid != os.geteuid():
        raise NotPrivate(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); "
            "someone else may be listening there: remove it (as its owner or root) and run the command again"
        )
    if st.st_mode & 0o022:
        raise NotPrivate(
            f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}, must be 0700): "
            "someone else may have put a socket there; remove it and run the command again"
        )


def make_private(path: Path, *, tighten: bool = False) -> Path:
    """Create path (mode 0700) if missing, then check it with check_private.

    With tighten, a folder of this user that others could only read or enter (no write bit for
    them: nobody else could have put anything in it) is closed to 0700 first, such as a run
    folder made before this rule.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if tighten:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            fd = -1  # not a directory, or a link: check_private says so
        if fd >= 0:
            try:
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                    os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
    check_private(path)
    return path


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    return "file"


def write_private_file(path: Path, text: str) -> None:
    """Write text to path, readable by this user only (mode 0600, an existing file's mode too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
