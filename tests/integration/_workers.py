"""Helpers for the tests that run several `tierflow run` workers over one PostgreSQL state: a
direct look at the state tables with psycopg (never through tierflow's store), a worker paused
or killed at an instant it provably holds windows, and a poll for a condition.

The tables are read by their column names in the shipped migration (`runs`: the ledger, one row
per window, and where a later schema has it `ledger_ranges`, done windows folded into ranges;
`attempts`: the history). Of the history only a range, its run and its status are
read (`window_start`, `window_stop`, `run_id`, `status`), what a row per batch of windows keeps
as well as a row per window, so the checks hold for either shape.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import psycopg

from tests.integration._support import Tierflow

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """A window range with the run that ran it and how it ended (a ledger row or an attempt)."""

    start: datetime
    stop: datetime
    run_id: str | None
    status: str


@dataclass(frozen=True)
class Held:
    """A window a worker holds (a running ledger row of its pid), and the claim's run."""

    start: datetime
    stop: datetime
    run_id: str


class StateTables:
    """Reads a tierflow PostgreSQL state database with its own connection (autocommit: each
    read sees what is committed at that instant)."""

    def __init__(self, url: str) -> None:
        self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        return self._db.execute(sql.encode(), params).fetchall()

    def migrated(self) -> bool:
        """Whether the workers have made tierflow's tables yet."""
        rows = self._rows(
            "SELECT to_regclass('runs') IS NOT NULL AND to_regclass('jobs') IS NOT NULL"
        )
        return bool(rows[0][0])

    def watermark(self, job: str) -> datetime | None:
        rows = self._rows("SELECT watermark FROM jobs WHERE job = %s", job)
        return _utc(rows[0][0]) if rows else None

    def ledger(self, job: str) -> list[Row]:
        """The ledger by window start: the rows of `runs` (one per window, with its run), and
        those of `ledger_ranges` where the schema folds done windows into ranges (no run)."""
        rows = self._rows(
            "SELECT window_start, window_stop, run_id, status FROM runs WHERE job = %s",
            job,
        )
        if self._rows("SELECT to_regclass('ledger_ranges') IS NOT NULL")[0][0]:
            rows += self._rows(
                "SELECT window_start, window_stop, NULL, status FROM ledger_ranges WHERE job = %s",
                job,
            )
        return sorted((_row(r) for r in rows), key=lambda row: row.start)

    def attempts(self, job: str, *, status: str | None = None) -> list[Row]:
        """The history (attempts), in the order they were made, optionally of one status."""
        sql = "SELECT window_start, window_stop, run_id, status FROM attempts WHERE job = %s"
        if status is None:
            return [_row(r) for r in self._rows(sql + " ORDER BY id", job)]
        return [_row(r) for r in self._rows(sql + " AND status = %s ORDER BY id", job, status)]

    def held_by(self, job: str, pid: int) -> list[Held]:
        """The windows the process `pid` holds: running rows whose holder is it."""
        rows = self._rows(
            "SELECT window_start, window_stop, run_id FROM runs"
            " WHERE job = %s AND status = 'running' AND holder_pid = %s ORDER BY window_start",
            job,
            pid,
        )
        return [Held(_utc(a), _utc(b), str(run)) for a, b, run in rows]

    def succeeded(self, job: str) -> int:
        rows = self._rows("SELECT count(*) FROM runs WHERE job = %s AND status = 'succeeded'", job)
        return _count(rows)

    def ports_in_transaction(self) -> set[int]:
        """The client ports of connections to this database inside a transaction (a worker
        paused there keeps its row locks while it is paused)."""
        rows = self._rows(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database()"
            " AND xact_start IS NOT NULL AND pid <> pg_backend_pid() AND client_port IS NOT NULL"
        )
        return {int(str(port)) for (port,) in rows}

    def ports_waiting_for(self, table: str) -> set[int]:
        """The client ports of connections waiting for a lock on `table`."""
        rows = self._rows(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE NOT l.granted AND l.relation = to_regclass(%s) AND a.client_port IS NOT NULL",
            table,
        )
        return {int(str(port)) for (port,) in rows}


class ClaimGate:
    """Holds every claim back: a transaction holding `runs` in EXCLUSIVE mode (plain reads go
    on; `SELECT … FOR UPDATE` and writes wait) until `open()`. So that workers started one
    after another on a loaded machine all start claiming at once."""

    def __init__(self, url: str) -> None:
        self._db = psycopg.connect(url, connect_timeout=10)
        self._db.execute(b"LOCK TABLE runs IN EXCLUSIVE MODE")

    def open(self) -> None:
        if not self._db.closed:
            self._db.commit()
            self._db.close()


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of process `pid`'s sockets (Linux /proc), to tell its connections
    apart in `pg_stat_activity` by their client port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def state_tables(url: str) -> Iterator[StateTables]:
    tables = StateTables(url)
    try:
        yield tables
    finally:
        tables.close()


@contextmanager
def claim_gate(url: str) -> Iterator[ClaimGate]:
    gate = ClaimGate(url)
    try:
        yield gate
    finally:
        gate.open()


def _count(rows: list[tuple[object, ...]]) -> int:
    (value,) = rows[0]
    assert isinstance(value, int), value
    return value


def _utc(value: object) -> datetime:
    assert isinstance(value, datetime), value
    return value.astimezone(UTC)


def _row(row: tuple[object, ...]) -> Row:
    start, stop, run_id, status = row
    return Row(_utc(start), _utc(stop), None if run_id is None else str(run_id), str(status))


def poll(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    every: float = 0.05,
    explain: Callable[[], str] = lambda: "",
) -> T:
    """`check()` until it returns something other than None (or False); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s. {explain()}")
        time.sleep(every)


def pause_holding(worker: Tierflow, tables: StateTables, job: str, timeout: float) -> list[Held]:
    """SIGSTOP `worker` at an instant it holds windows and is not inside a state transaction
    (whose row locks would stay held while it is stopped); return what it holds. Between tries
    it runs again (SIGCONT) for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        assert worker.process.poll() is None, f"the worker ended; {worker.describe()}"
        worker.send(signal.SIGSTOP)
        held = tables.held_by(job, worker.process.pid)
        if held:
            time.sleep(0.2)  # what it sent just before it stopped reaches the server
            if not local_ports(worker.process.pid) & tables.ports_in_transaction():
                return tables.held_by(job, worker.process.pid)
        worker.send(signal.SIGCONT)
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker held no windows within {timeout:g} s")
        time.sleep(0.05)


def kill_holding(worker: Tierflow, tables: StateTables, job: str, timeout: float) -> list[Held]:
    """SIGKILL `worker` at an instant it holds windows (stopped first, so that what it holds
    cannot change between the look and the kill); return what it held."""
    deadline = time.monotonic() + timeout
    while True:
        assert worker.process.poll() is None, f"the worker ended; {worker.describe()}"
        worker.send(signal.SIGSTOP)
        if held := tables.held_by(job, worker.process.pid):
            worker.send(signal.SIGKILL)
            worker.wait(timeout=10)
            return held
        worker.send(signal.SIGCONT)
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker held no windows within {timeout:g} s")
        time.sleep(0.05)


def gaps_and_overlaps(rows: list[Row], start: datetime, stop: datetime) -> list[str]:
    """Where the ranges of `rows` fail to tile `[start, stop)` exactly once: each gap and each
    overlap, described (empty: they tile it)."""
    problems = []
    at = start
    for row in sorted(rows, key=lambda r: (r.start, r.stop)):
        if row.start > at:
            problems.append(f"gap [{at}, {row.start})")
        elif row.start < at:
            problems.append(f"[{row.start}, {row.stop}) overlaps what ends at {at}")
        at = max(at, row.stop)
    if at != stop:
        problems.append(f"the ranges end at {at}, not at {stop}")
    return problems


def covers(row: Row, window: Held) -> bool:
    return row.start <= window.start and window.stop <= row.stop


def covering(windows: list[Held], ranges: list[tuple[datetime, datetime, str]]) -> set[str]:
    """The runs among `ranges` (start, stop, run_id) whose range covers any of `windows`."""
    return {
        run
        for low, high, run in ranges
        for window in windows
        if low <= window.start and window.stop <= high
    }
