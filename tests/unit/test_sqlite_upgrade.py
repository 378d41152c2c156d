"""A populated SQLite state file from an older tierflow opens with this one: every row, watermark
and attempt reads back right through the async API, and the newer features work on it. Also: a
claim waiting for another process's write lock does not stall the event loop."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tierflow._state._sqlite
from tierflow._state import (
    Attempt,
    Holder,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    SqliteStateStore,
)
from tierflow._state._sql import parse_queries, queries
from tierflow._state._sqlite import migrations
from tierflow._windows import Window, to_micros

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
JOB, IDLE = "cpu_1h", "mem_1d"
HERE = Holder("here", 4242, "boot:7")


def hour(k: int) -> Window:
    return Window(T0 + k * H, T0 + (k + 1) * H)


def us(moment: datetime) -> int:
    return to_micros(moment)


def window_key(k: int) -> tuple[str, int, int]:
    """JOB's hourly window `k` as the ledger's key columns (job, start, stop) in microseconds."""
    return (JOB, us(hour(k).start), us(hour(k).stop))


def after_t0(minutes: int | None) -> int | None:
    """The column value of a moment `minutes` after T0, in microseconds (None stays None)."""
    return None if minutes is None else us(T0 + timedelta(minutes=minutes))


def populate_v1_rows(db: sqlite3.Connection) -> None:
    """What a version-1 tierflow wrote (only version-1 columns): two jobs; window 0 succeeded,
    1 succeeded on its second attempt, 2 failed three times, 3 running under a live lease."""
    db.executemany(
        "INSERT INTO jobs (job, watermark) VALUES (?, ?)",
        [(JOB, us(T0 + 2 * H)), (IDLE, us(T0))],
    )
    runs = [
        (0, "succeeded", 1, "r0", 10, 12, None, 2.0, None),
        (1, "succeeded", 2, "r1b", 30, 31, None, 1.0, None),
        (2, "failed", 3, "r2c", 50, 52, None, 2.0, "server said no"),
        (3, "running", 1, "r-live", 70, None, 300, None, None),
    ]
    db.executemany(
        "INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id, started_at,"
        " finished_at, lease_expires_at, duration_s, query_hash, template_version, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'q', 't1', ?)",
        [
            (*window_key(k), status, attempts, run_id, *map(after_t0, times), duration, error)
            for k, status, attempts, run_id, *times, duration, error in runs
        ],
    )
    attempts = [
        (0, 1, "r0", "succeeded", 10, 12, None),
        (1, 1, "r1a", "failed", 20, 21, "timeout"),
        (1, 2, "r1b", "succeeded", 30, 31, None),
        (2, 1, "r2a", "failed", 40, 41, "server said no"),
        (2, 2, "r2b", "failed", 45, 46, "server said no"),
        (2, 3, "r2c", "failed", 50, 52, "server said no"),
        (3, 1, "r-live", "running", 70, None, None),
    ]
    db.executemany(
        "INSERT INTO attempts (job, window_start, window_stop, attempt, run_id, status,"
        " started_at, finished_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*window_key(k), attempt, run_id, status, *map(after_t0, times), error)
            for k, attempt, run_id, status, *times, error in attempts
        ],
    )


def older_file(path: Path, version: int) -> None:
    """A state file as a tierflow with `version` migrations left it, holding the v1 rows."""
    db = sqlite3.connect(path)
    try:
        db.execute(queries("sqlite")["create_schema_migrations"])
        for number, sql in migrations()[:version]:
            db.executescript(sql)
            db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (number,))
        populate_v1_rows(db)
        db.commit()
    finally:
        db.close()


def m(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def entry(k: int, status: RunStatus, attempts: int, run_id: str, *times: int | None) -> LedgerEntry:
    started, finished, lease = (None if t is None else m(t) for t in times)
    error = "server said no" if status is RunStatus.FAILED else None
    return LedgerEntry(JOB, hour(k), status, attempts, run_id, started, finished, lease, error)


EXPECTED_ENTRIES = [
    entry(0, RunStatus.SUCCEEDED, 1, "r0", 10, 12, None),
    entry(1, RunStatus.SUCCEEDED, 2, "r1b", 30, 31, None),
    entry(2, RunStatus.FAILED, 3, "r2c", 50, 52, None),
    entry(3, RunStatus.RUNNING, 1, "r-live", 70, None, 300),
]


def attempt(
    k: int,
    n: int,
    run_id: str,
    status: RunStatus,
    started: int,
    finished: int | None,
    error: str | None,
) -> Attempt:
    done = None if finished is None else m(finished)
    return Attempt(JOB, hour(k), n, run_id, status, m(started), done, None, None, None, error)


EXPECTED_HISTORY = [  # newest first
    attempt(3, 1, "r-live", RunStatus.RUNNING, 70, None, None),
    attempt(2, 3, "r2c", RunStatus.FAILED, 50, 52, "server said no"),
    attempt(2, 2, "r2b", RunStatus.FAILED, 45, 46, "server said no"),
    attempt(2, 1, "r2a", RunStatus.FAILED, 40, 41, "server said no"),
    attempt(1, 2, "r1b", RunStatus.SUCCEEDED, 30, 31, None),
    attempt(1, 1, "r1a", RunStatus.FAILED, 20, 21, "timeout"),
    attempt(0, 1, "r0", RunStatus.SUCCEEDED, 10, 12, None),
]


@pytest.mark.parametrize("version", range(1, len(migrations())))
async def test_a_populated_older_database_upgrades(tmp_path: Path, version: int) -> None:
    path = tmp_path / "state.db"
    older_file(path, version)

    async with SqliteStateStore(path) as store:
        assert store.schema_version == len(migrations())
        # Every row, watermark and attempt as the older tierflow left them.
        assert await store.jobs() == [JOB, IDLE]
        assert await store.watermark(JOB) == T0 + 2 * H
        assert await store.watermark(IDLE) == T0
        assert await store.entries(JOB, T0) == EXPECTED_ENTRIES
        assert await store.entries(IDLE, T0) == []
        assert await store.history(JOB) == EXPECTED_HISTORY
        assert await store.history(JOB, limit=2) == EXPECTED_HISTORY[:2]
        assert await store.count_attempts(JOB, reason="scheduled") == 7  # the v2 default
        census = await store.census(JOB, T0, T0 + 4 * H)
        assert census.counts == {
            (RunStatus.SUCCEEDED, False): 2,
            (RunStatus.FAILED, False): 1,
            (RunStatus.RUNNING, False): 1,
        }
        assert census.running == (EXPECTED_ENTRIES[3],)

        # Definitions: none recorded yet; one records and reads back.
        assert await store.definition(JOB) is None
        await store.record_definition(JOB, JobDefinition('{"dest":"warm"}'))
        assert await store.definition(JOB) == JobDefinition('{"dest":"warm"}')

        # The failed window runs again under a holder: its 4th attempt, parked at 4.
        taken = await store.claim(
            JOB, [hour(2)], run_id="r2d", started_at=m(200), lease_expires_at=m(260), holder=HERE
        )
        assert taken.taken == (hour(2),)
        (running,) = await store.entries(JOB, hour(2).start, hour(3).start)
        assert (running.attempts, running.holder) == (4, HERE)
        failed = Outcome(RunStatus.FAILED, m(201), 1.0, error="server said no")
        await store.finish(JOB, [hour(2)], run_id="r2d", outcome=failed, park_after=4)
        (parked,) = await store.entries(JOB, hour(2).start, hour(3).start)
        assert (parked.parked, parked.attempts, parked.attempt_base) == (True, 4, 0)
        assert await store.requeue(JOB) == 1

        # The live lease of the older run (no holder recorded) is respected until it expires…
        held = await store.claim(
            JOB, [hour(3)], run_id="r3b", started_at=m(299), lease_expires_at=m(359), holder=HERE
        )
        assert (held.taken, held.held) == ((), (EXPECTED_ENTRIES[3],))
        # …then taken over, its attempt marked abandoned in the history.
        later = await store.claim(
            JOB,
            [hour(2), hour(3)],
            run_id="r3c",
            started_at=m(300),
            lease_expires_at=m(360),
            holder=HERE,
        )
        assert later.taken == (hour(2), hour(3))
        abandoned = [a for a in await store.history(JOB) if a.run_id == "r-live"]
        assert [(a.status, a.finished_at, a.error) for a in abandoned] == [
            (RunStatus.ABANDONED, m(300), "lease expired before the run finished")
        ]
        done = Outcome(RunStatus.SUCCEEDED, m(301), 1.0, fingerprints={hour(3).start: "fp"})
        assert (
            await store.finish(JOB, [hour(2), hour(3)], run_id="r3c", outcome=done) == hour(3).stop
        )
        assert [(e.attempts, e.fingerprint) for e in await store.entries(JOB, hour(2).start)] == [
            (5, None),
            (2, "fp"),
        ]

        # The older rows fold into ledger ranges like any (a range each: their attempts differ),
        # and read back as the same windows.
        assert await store.claim(
            JOB, [hour(4)], run_id="r4", started_at=m(302), lease_expires_at=m(360)
        )
        ok = Outcome(RunStatus.SUCCEEDED, m(303), 1.0)
        await store.finish(JOB, [hour(4)], run_id="r4", outcome=ok, compact_before=m(10_000))
        assert [(e.window, e.status, e.attempts) for e in await store.entries(JOB, T0)] == [
            (hour(0), RunStatus.SUCCEEDED, 1),
            (hour(1), RunStatus.SUCCEEDED, 2),
            (hour(2), RunStatus.SUCCEEDED, 5),
            (hour(3), RunStatus.SUCCEEDED, 2),
            (hour(4), RunStatus.SUCCEEDED, 1),
        ]

    # And the upgraded file opens again as it is.
    async with SqliteStateStore(path) as again:
        assert await again.watermark(JOB) == hour(4).stop
        assert await again.definition(JOB) == JobDefinition('{"dest":"warm"}')
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM ledger_ranges").fetchone() == (5,)
    finally:
        db.close()


async def test_version_5_history_becomes_one_window_rows_and_the_ledger_stays(
    tmp_path: Path,
) -> None:
    """Version 6 keeps one history row per claimed run of windows: each older row (one window)
    is a run of one; the per-window ledger rows stay rows until a finish folds them."""
    path = tmp_path / "state.db"
    older_file(path, 5)
    async with SqliteStateStore(path) as store:
        assert store.schema_version == len(migrations())
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT window_start, window_stop, windows, attempt, run_id FROM attempts ORDER BY id"
        ).fetchall()
        assert [(start, stop, attempt, run) for start, stop, _, attempt, run in rows] == [
            (us(a.window.start), us(a.window.stop), a.attempt, a.run_id)
            for a in reversed(EXPECTED_HISTORY)
        ]
        assert {windows for _, _, windows, _, _ in rows} == {1}
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (4,)
        assert db.execute("SELECT COUNT(*) FROM ledger_ranges").fetchone() == (0,)
        # The same window may now be in two history rows of the same attempt number (split
        # parts): no unique (job, window_start, attempt) any more.
        db.execute(
            "INSERT INTO attempts (job, window_start, window_stop, attempt, run_id, status,"
            " started_at) SELECT job, window_start, window_stop, attempt, run_id, status,"
            " started_at FROM attempts WHERE id = 1"
        )
    finally:
        db.close()


async def test_a_claim_waiting_for_the_write_lock_does_not_block_the_event_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.ensure_job(JOB, T0)
        # Another process holds the write lock (the store would wait up to its 30 s timeout).
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:  # as a lease heartbeat would
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beating = asyncio.create_task(ticker())
        try:
            claiming = asyncio.create_task(
                store.claim(JOB, [hour(0)], run_id="r1", started_at=T0, lease_expires_at=T0 + H)
            )
            await asyncio.sleep(0.5)
            assert not claiming.done()  # still waiting for the lock…
            assert ticks >= 20  # …while the loop went on
            other.execute("COMMIT")
            claim = await asyncio.wait_for(claiming, 10)
            assert claim.taken == (hour(0),)
        finally:
            beating.cancel()
            other.close()


def test_every_query_the_sqlite_store_names_is_shipped() -> None:
    source = Path(tierflow._state._sqlite.__file__).read_text(encoding="utf-8")
    named = set(re.findall(r'Q\["(\w+)"\]', source)) | set(
        re.findall(r'_(?:read|fetch)\(\s*"(\w+)"', source)
    )
    assert named
    assert named <= set(queries("sqlite"))


def test_queries_are_split_by_name() -> None:
    text = "-- preamble\n\n-- name: one\nSELECT 1;\n\n-- name: two\n-- a note\nSELECT\n  2;\n"
    assert parse_queries(text) == {"one": "SELECT 1", "two": "-- a note\nSELECT\n  2"}
