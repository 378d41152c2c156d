"""Who holds a claim: host, pid and the process's start, so a dead holder is told from a live one.

A pid alone is not a process: pids are reused. The start token (boot id and the process's start
time in clock ticks since boot, from /proc/<pid>/stat) names one process for good, so a pid that
now belongs to another process is not mistaken for the holder.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["Holder", "holder_gone", "this_process"]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Holder:
    """The process that holds a claim. `started` is empty where the platform cannot say."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}"


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start token) of a process on this host; None when there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], f"{_boot_id()}:{fields[19]}"


def this_process() -> Holder:
    """This process, as a claim records it."""
    return _holder_of(os.getpid())  # keyed by pid: a forked child is another holder


@cache
def _holder_of(pid: int) -> Holder:
    found = _process_state(pid) if (_PROC / "self/stat").exists() else None
    return Holder(socket.gethostname(), pid, found[1] if found else "")


def holder_gone(holder: Holder) -> bool:
    """Whether `holder` is certainly dead: a process of this host whose pid no longer exists, is
    a zombie, or now belongs to a process started later. A holder on another host, or one this
    platform cannot check, is never judged gone (its lease decides)."""
    me = this_process()
    if holder.host != me.host or not me.started or not holder.started:
        return False
    found = _process_state(holder.pid)
    if found is None:
        return True
    state, started = found
    return state in {"Z", "X"} or started != holder.started
