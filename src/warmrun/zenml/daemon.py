"""Detached processes the ZenML deployer flavor starts: a deployment's `warmrun serve`
and the shared Temporal dev server.

They outlive the command that started them (`zenml pipeline deploy` exits at once), so
each runs in a session of its own with its output appended to a log file, and is
known afterwards only by the pid recorded for it. A pid can be reused by an unrelated
process once ours is gone: a recorded pid counts as ours only while its command line
still carries the arguments we started it with.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

STOP_TIMEOUT = 10.0
"""Seconds a process gets to exit on SIGTERM before it is killed, unless told otherwise."""


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start `command` detached: no terminal input, stdout and stderr appended to
    `log_file`, its own session (the caller's Ctrl-C or exit does not reach it); of
    the caller's files, it inherits only `pass_fds`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )


def is_ours(pid: int | None, marks: Sequence[str]) -> bool:
    """The process `pid` is alive and its command line has every one of `marks`."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return all(mark in cmdline for mark in marks)


def stop(pid: int | None, marks: Sequence[str], timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process if it is ours, SIGKILL it after `timeout` seconds; True if
    it was running."""
    if not is_ours(pid, marks):
        return False
    assert pid is not None
    try:
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
    except psutil.NoSuchProcess:
        pass
    return True


def tail(log_file: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" if there is none)."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
