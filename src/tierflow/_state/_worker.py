"""The workers: each `tierflow run` daemon registers itself in the state store and beats there,
so `status` can say which workers are live and which stopped beating.

A worker is named by the process that holds its claims (`Holder`: host, pid and the process's
start), so `status` can tell which running windows are whose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tierflow._state._holder import Holder

__all__ = [
    "BEAT_INTERVAL",
    "FORGET_AFTER",
    "GONE_AFTER",
    "SHOWN_FOR",
    "Worker",
    "WorkerState",
    "worker_of",
    "worker_params",
]

#: How often a daemon records that it is alive.
BEAT_INTERVAL = timedelta(seconds=5)
#: A worker that has not beaten for this long is gone (crashed, paused, cut off): six beats, so
#: a busy event loop or a slow database does not make a live worker look gone.
GONE_AFTER = timedelta(seconds=30)
#: How long `status` keeps showing a worker after its last beat.
SHOWN_FOR = timedelta(hours=1)
#: A worker's row is deleted (by any worker's beat) this long after its last beat.
FORGET_AFTER = timedelta(days=1)


class WorkerState(StrEnum):
    """Whether a worker beats (`live`), stopped beating without saying so (`gone`), or shut
    down cleanly (`stopped`)."""

    LIVE = "live"
    #: Stopped beating without saying so: killed, paused, or cut off from the state store.
    GONE = "gone"
    #: Shut down cleanly.
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Worker:
    """A `tierflow run` daemon as the state store has it: the process (`holder`), the tierflow
    version it runs, when it started, its last beat, the jobs it runs, and when it shut down
    (None while it runs, or if it died without saying so)."""

    holder: Holder
    version: str
    started_at: datetime
    last_seen: datetime
    jobs: tuple[str, ...] = ()
    stopped_at: datetime | None = None

    @property
    def id(self) -> str:
        """The worker's id: host, pid and the process's start token (pids are reused)."""
        return f"{self.holder.host}:{self.holder.pid}:{self.holder.started}"

    def state(self, now: datetime, gone_after: timedelta = GONE_AFTER) -> WorkerState:
        """Live, gone or stopped, as seen at `now`."""
        if self.stopped_at is not None:
            return WorkerState.STOPPED
        return WorkerState.LIVE if now - self.last_seen < gone_after else WorkerState.GONE


def worker_params(worker: Worker, moment: Callable[[datetime], Any], jobs: Any) -> dict[str, Any]:
    """`worker` as the named parameters of the `beat` query; `moment` encodes a time, `jobs`
    is the jobs encoded as the store keeps them."""
    return {
        "host": worker.holder.host,
        "pid": worker.holder.pid,
        "process_started": worker.holder.started,
        "version": worker.version,
        "started_at": moment(worker.started_at),
        "last_seen": moment(worker.last_seen),
        "stopped_at": None if worker.stopped_at is None else moment(worker.stopped_at),
        "jobs": jobs,
    }


def worker_of(row: Sequence[Any], moment: Callable[[Any], datetime], jobs: Iterable[str]) -> Worker:
    """A worker from a row of the `workers` query (`moment` decodes a time; `jobs` decoded)."""
    host, pid, started, version, started_at, last_seen, stopped_at = row[:7]
    return Worker(
        Holder(str(host), int(pid), str(started)),
        str(version),
        moment(started_at),
        moment(last_seen),
        tuple(jobs),
        None if stopped_at is None else moment(stopped_at),
    )
