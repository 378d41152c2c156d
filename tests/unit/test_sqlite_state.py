"""What only the SQLite store does: a file that persists, migrations, and the state URL."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tierflow._state
from tierflow._errors import ConfigError, StateError
from tierflow._state import (
    MemoryStateStore,
    Outcome,
    RunStatus,
    SqliteStateStore,
    open_state_store,
)
from tierflow._state._sqlite import migrations
from tierflow._windows import Window

T0 = datetime(2026, 11, 1, tzinfo=UTC)
W0 = Window(T0, T0 + timedelta(minutes=5))
W1 = Window(W0.stop, W0.stop + timedelta(minutes=5))
MIGRATIONS = Path(tierflow._state.__file__).parent / "migrations" / "sqlite"


def schema(db: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    rows = db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master"
        " WHERE name != 'schema_migrations' ORDER BY type, name"
    ).fetchall()
    return [tuple(row) for row in rows]


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await store.ensure_job("a", T0)
        await store.ensure_job("b", T0)
        await store.claim(
            "a", [W0, W1], run_id="r1", started_at=T0, lease_expires_at=T0 + W0.length
        )
        await store.finish(
            "a",
            [W0],
            run_id="r1",
            outcome=Outcome(
                RunStatus.SUCCEEDED, T0 + timedelta(seconds=3), 2.5, query_hash="q", error=None
            ),
        )
        entries, history = await store.entries("a", T0), await store.history("a")

    async with SqliteStateStore(path) as reopened:
        assert await reopened.jobs() == ["a", "b"]
        assert await reopened.watermark("a") == W0.stop
        assert await reopened.watermark("b") == T0
        assert await reopened.entries("a", T0) == entries
        assert await reopened.history("a") == history
        # The claim on W1 is still r1's after the restart.
        assert (
            await reopened.finish(
                "a", [W1], run_id="r1", outcome=Outcome(RunStatus.SUCCEEDED, T0, 1.0)
            )
            == W1.stop
        )


async def test_schema_version_is_the_number_of_shipped_migrations(tmp_path: Path) -> None:
    on_disk = sorted(MIGRATIONS.glob("*.sql"))
    assert on_disk, "no migrations shipped"
    assert [version for version, _ in migrations()] == list(range(1, len(on_disk) + 1))
    store = SqliteStateStore(tmp_path / "s.db")
    try:
        assert store.schema_version == len(on_disk)
    finally:
        await store.aclose()


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await SqliteStateStore(path).aclose()
    await SqliteStateStore(path).aclose()
    db = sqlite3.connect(path)
    try:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
    finally:
        db.close()
    assert versions == list(range(1, len(migrations()) + 1))


async def test_schema_equals_the_migrations_applied_in_order(tmp_path: Path) -> None:
    await SqliteStateStore(tmp_path / "store.db").aclose()
    by_hand = sqlite3.connect(tmp_path / "by_hand.db")
    for script in sorted(MIGRATIONS.glob("*.sql")):
        by_hand.executescript(script.read_text(encoding="utf-8"))
    made = sqlite3.connect(tmp_path / "store.db")
    try:
        assert schema(made) == schema(by_hand)
        assert {row[1] for row in schema(made)} >= {"jobs", "runs", "attempts"}
    finally:
        made.close()
        by_hand.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await SqliteStateStore(path).aclose()
    newer = len(migrations()) + 1
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (newer,))
    db.close()
    with pytest.raises(StateError, match=rf"schema version {newer}.*upgrade tierflow"):
        SqliteStateStore(path)


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(StateError, match=re.escape(str(path))):
        SqliteStateStore(path)


async def test_the_ledger_is_unique_on_job_and_window_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await SqliteStateStore(path).aclose()
    db = sqlite3.connect(path)
    try:
        insert = "INSERT INTO runs (job, window_start, window_stop, status) VALUES (?, ?, ?, ?)"
        db.execute(insert, ("j", 0, 300, "running"))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(insert, ("j", 0, 600, "failed"))
    finally:
        db.close()


async def test_a_populated_database_from_before_definitions_upgrades(tmp_path: Path) -> None:
    """A state file written by tierflow at schema version 3 (no definitions, no claim holders):
    opened by this version, its ledger is intact and its jobs have no recorded definition, so
    the first run records one rather than refusing."""
    from tests.unit.test_definitions import make_config
    from tierflow._definitions import accept_definitions, check_definitions
    from tierflow._runner import Runner

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE schema_migrations ("
        " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for script in sorted(MIGRATIONS.glob("*.sql"))[:3]:
        old.executescript(script.read_text(encoding="utf-8"))
    old.executemany("INSERT INTO schema_migrations (version) VALUES (?)", [(1,), (2,), (3,)])
    hour = 3_600_000_000
    start = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, the test config's start
    old.execute("INSERT INTO jobs VALUES ('cpu', ?)", (start + 2 * hour,))
    for k in range(2):
        old.execute(
            "INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id,"
            " started_at, finished_at, fingerprint) VALUES"
            " ('cpu', ?, ?, 'succeeded', 1, 'r', ?, ?, 'fp')",
            (start + k * hour, start + (k + 1) * hour, start, start),
        )
        old.execute(
            "INSERT INTO attempts (job, window_start, window_stop, attempt, run_id, status,"
            " started_at, reason) VALUES ('cpu', ?, ?, 1, 'r', 'succeeded', ?, 'scheduled')",
            (start + k * hour, start + (k + 1) * hour, start),
        )
    old.commit()
    old.close()

    async with SqliteStateStore(path) as store:
        assert store.schema_version == len(migrations())
        assert await store.watermark("cpu") == datetime(2026, 1, 1, 2, tzinfo=UTC)
        assert [e.fingerprint for e in await store.entries("cpu", T0 - timedelta(days=400))] == [
            "fp",
            "fp",
        ]
        assert len(await store.history("cpu")) == 2
        assert await store.definition("cpu") is None
        config = make_config()
        (check,) = await check_definitions(config, store)
        assert check.state == "unrecorded"
        await accept_definitions(config, store, None)  # records, does not refuse
        assert (await check_definitions(config, store))[0].state == "same"
        # Planning still starts at the old watermark: nothing is run again.
        (plan,) = await Runner(config, store).plan(datetime(2026, 1, 1, 3, tzinfo=UTC))
        two, three = (datetime(2026, 1, 1, hour, tzinfo=UTC) for hour in (2, 3))
        assert plan.windows == [Window(two, three)]


# ---------------------------------------------------------------------------------------------
# open_state_store


def test_open_memory_store() -> None:
    assert isinstance(open_state_store("memory://"), MemoryStateStore)


async def test_open_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state_store("sqlite:///tierflow.db")
    try:
        assert isinstance(store, SqliteStateStore)
        assert (tmp_path / "tierflow.db").is_file()
        assert not Path(store.path).is_absolute()
    finally:
        await store.aclose()


async def test_open_relative_sqlite_path_in_a_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    store = open_state_store("sqlite:///var/state.db")
    await store.aclose()
    assert (tmp_path / "var" / "state.db").is_file()


async def test_open_absolute_sqlite_path(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    url = f"sqlite:///{target}"  # tmp_path is absolute, so this reads sqlite:////…
    assert url.startswith("sqlite:////")
    store = open_state_store(url)
    try:
        assert isinstance(store, SqliteStateStore)
        assert Path(store.path) == target
        assert target.is_file()
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://localhost/tierflow",
        "sqlite://tierflow.db",  # two slashes: a host, not a path
        "sqlite:///",  # no file
        "memory:",
        "memory:///x",
        "file:///tmp/tierflow.db",
        "",
    ],
)
def test_unsupported_state_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="state url"):
        open_state_store(url)


@pytest.mark.parametrize("url", ["postgresql://tierflow@db/tierflow", "postgres://db/tierflow"])
async def test_a_postgresql_url_opens_a_postgres_store_that_connects_on_first_use(
    url: str,
) -> None:
    store = open_state_store(url)  # no server at "db": nothing connects yet
    assert type(store).__name__ == "PostgresStateStore"
    await store.aclose()
