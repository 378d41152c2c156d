"""The PostgreSQL state store on a real server (`ThrowawayPostgres`: $TIERFLOW_TEST_POSTGRES_URL's,
else a throwaway one): the contract every store passes, its migrations, workers opening and
claiming at once, and errors that name the database but never the password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    EVERY,
    assert_tier,
    expected_tier,
    grid,
    job,
    readings,
    write_points,
)
from tests.integration.conftest import WARM_RP, config_tables, read_tier, write_toml
from tests.integration.test_cli import STATUS_KEYS, ok_json, rfc3339, tierflow
from tierflow._errors import StateError
from tierflow._secrets import EnvSecret
from tierflow._state import LedgerEntry, Outcome, RunStatus, StateStore, open_state_store
from tierflow._state._postgres import PostgresStateStore, migrations
from tierflow._windows import Window
from tierflow.testing import ThrowawayInfluxd
from tierflow.testing.postgres import ThrowawayPostgres
from tierflow.testing.state_contract import StateStoreContract

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
LEASE = timedelta(minutes=10)


def windows(n: int) -> list[Window]:
    return [Window(T0 + i * STEP, T0 + (i + 1) * STEP) for i in range(n)]


class TestPostgresStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[StateStore]:
        async with PostgresStateStore(postgres_url) as made:
            yield made


# The catalog as PostgreSQL describes it: tables and columns, constraints, indexes.
CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2""",
}


def catalog(postgres: ThrowawayPostgres, url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: postgres.execute(sql, url) for name, sql in CATALOG.items()}


async def test_the_schema_equals_the_migrations_applied_in_order(
    postgres: ThrowawayPostgres, postgres_url: str
) -> None:
    async with PostgresStateStore(postgres_url) as store:
        assert store.schema_version == len(migrations())
    by_hand = postgres.new_database()
    try:
        postgres.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())",
            by_hand,
        )
        for version, sql in migrations():
            postgres.execute(sql, by_hand)
            postgres.execute(f"INSERT INTO schema_migrations (version) VALUES ({version})", by_hand)
        assert catalog(postgres, postgres_url) == catalog(postgres, by_hand)
        assert catalog(postgres, postgres_url)["columns"]  # the comparison compared something
    finally:
        postgres.drop_database(by_hand)
    versions = postgres.execute("SELECT version FROM schema_migrations ORDER BY 1", postgres_url)
    assert versions == [(v,) for v, _ in migrations()]


async def test_workers_opening_a_fresh_database_at_once_migrate_it_once(
    postgres: ThrowawayPostgres, postgres_url: str
) -> None:
    stores = [PostgresStateStore(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(store.__aenter__() for store in stores))
        assert [store.schema_version for store in stores] == [len(migrations())] * 4
        assert await asyncio.gather(*(s.ensure_job("j", T0) for s in stores)) == [T0] * 4
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))
    rows = postgres.execute("SELECT count(*) FROM schema_migrations", postgres_url)
    assert rows == [(len(migrations()),)]


async def test_a_database_of_a_newer_schema_is_refused(
    postgres: ThrowawayPostgres, postgres_url: str
) -> None:
    async with PostgresStateStore(postgres_url):
        pass
    postgres.execute("INSERT INTO schema_migrations (version) VALUES (999)", postgres_url)
    with pytest.raises(StateError, match="schema version 999, newer"):
        async with PostgresStateStore(postgres_url):
            pass


async def test_workers_claiming_the_same_windows_at_once_take_each_once(postgres_url: str) -> None:
    """Four workers, each claiming the same 40 windows in overlapping batches at once: every
    window is taken by exactly one claim, and the others say it is held."""
    stores = [PostgresStateStore(postgres_url) for _ in range(4)]
    every = windows(40)
    try:
        await stores[0].ensure_job("j", T0)

        async def worker(number: int, store: PostgresStateStore) -> list[Window]:
            taken: list[Window] = []
            for first in range(0, 40, 5):
                batch = every[first : first + 10]
                claim = await store.claim(
                    "j",
                    batch,
                    run_id=f"w{number}-{first}",
                    started_at=T0,
                    lease_expires_at=T0 + LEASE,
                )
                assert len(claim.taken) + len(claim.held) == len(batch), claim
                taken += claim.taken
            return taken

        took = await asyncio.gather(*(worker(n, s) for n, s in enumerate(stores)))
        flat = [w for part in took for w in part]
        assert sorted(flat) == every  # each window once, none lost
        entries = await stores[0].entries("j", T0)
        assert [(e.status, e.attempts) for e in entries] == [(RunStatus.RUNNING, 1)] * 40
        history = await stores[0].history("j", limit=1000)
        assert sorted(w for a in history for w in a.each()) == every  # one attempt each
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))


async def test_concurrent_finishes_of_one_job_move_the_watermark_over_all(
    postgres_url: str,
) -> None:
    stores = [PostgresStateStore(postgres_url) for _ in range(4)]
    every = windows(40)
    try:
        await stores[0].ensure_job("j", T0)
        for n, store in enumerate(stores):
            mine = every[n::4]
            assert await store.claim(
                "j", mine, run_id=f"r{n}", started_at=T0, lease_expires_at=T0 + LEASE
            )

        async def finish_one_by_one(n: int, store: PostgresStateStore) -> None:
            for window in every[n::4]:
                await store.finish(
                    "j", [window], run_id=f"r{n}", outcome=Outcome(RunStatus.SUCCEEDED, T0, 0.1)
                )

        await asyncio.gather(*(finish_one_by_one(n, s) for n, s in enumerate(stores)))
        assert await stores[0].watermark("j") == every[-1].stop
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))


async def test_errors_name_the_database_but_never_the_password(
    postgres: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-Pa55word"
    monkeypatch.setenv("TIERFLOW_TEST_PG_PASSWORD", secret)
    postgres.execute(f"CREATE ROLE tierflow_pw LOGIN PASSWORD '{secret}-not'")  # a wrong one
    try:
        url = postgres.database_url("no_such_db").replace("//postgres@", "//tierflow_pw@")
        store = open_state_store(url, password=EnvSecret(env="TIERFLOW_TEST_PG_PASSWORD"))
        assert isinstance(store, PostgresStateStore)
        with pytest.raises(StateError) as caught:
            await store.ensure_job("j", T0)
        await store.aclose()
    finally:
        postgres.execute("DROP ROLE tierflow_pw")
    message = str(caught.value)
    assert "tierflow_pw@127.0.0.1" in message, message
    assert "/no_such_db" in message, message
    assert secret not in message
    assert secret not in repr(caught.value.__cause__)


async def test_a_server_that_does_not_answer_is_a_state_error() -> None:
    store = PostgresStateStore("postgresql://nobody@127.0.0.1:1/db", timeout=2)
    with pytest.raises(StateError, match=r"postgresql://nobody@127\.0\.0\.1:1/db"):
        await store.watermark("j")
    await store.aclose()


def test_run_once_with_postgresql_state_downsamples_and_status_reads_it(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres_url: str,
    tmp_path: Path,
    start: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI end to end with `[state] url = "postgresql://…"` (its password from a secret
    source): what lands in the warm tier equals plain Python's aggregates of the raw points,
    and `status` and `history` read the ledger back from PostgreSQL."""
    points = readings(17, start, 24)
    write_points(influxd, db, points)
    tables = config_tables(url=influxd.url, db=db, state=tmp_path / "unused", jobs={})
    tables["state"] = {"url": postgres_url, "password": {"env": "PGSTATE_TEST_PASSWORD"}}
    tables["jobs.down"] = {"kind": "downsample", "source": "hot", "dest": "warm", **job(start)}
    config = write_toml(tmp_path, tables)
    monkeypatch.setenv("PGSTATE_TEST_PASSWORD", "unused-by-trust-auth")
    now = start + 24 * EVERY

    ran = ok_json(tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path))
    again = ok_json(
        tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path)
    )
    later = now + 2 * EVERY
    status = ok_json(
        tierflow("status", "-c", config, "--now", rfc3339(later), "--json", cwd=tmp_path)
    )
    history = ok_json(tierflow("history", "down", "-c", config, "--json", cwd=tmp_path))

    assert (ran["succeeded"], ran["failed"]) == (24, 0)
    assert (again["runs"], again["succeeded"]) == ([], 0)
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, grid(start, EVERY, 24)))
    (row,) = status["jobs"]
    assert {key: row[key] for key in STATUS_KEYS} == {
        "job": "down",
        "watermark": rfc3339(now),
        "lag_seconds": (later - now).total_seconds(),
        "last_status": "succeeded",
        "failed_windows": 0,
        "pending_windows": 2,
    }
    attempts = history["attempts"]
    # One history row per claimed run of windows: together they ran each window once.
    ran_windows = sorted(
        Window(first + i * length, first + (i + 1) * length)
        for a in attempts
        for first, length in [
            (
                datetime.fromisoformat(a["start"]),
                (datetime.fromisoformat(a["stop"]) - datetime.fromisoformat(a["start"]))
                / a["windows"],
            )
        ]
        for i in range(a["windows"])
    )
    assert ran_windows == [Window(a, b) for a, b in grid(start, EVERY, 24)]
    assert {(a["status"], a["attempt"]) for a in attempts} == {("succeeded", 1)}
    assert not (tmp_path / "unused").exists()  # nothing went to a SQLite file

    # The ledger is in PostgreSQL, one row per window.
    async def rows() -> list[LedgerEntry]:
        async with PostgresStateStore(postgres_url) as store:
            return await store.entries("down", start)

    entries = asyncio.run(rows())
    assert [e.window for e in entries] == [Window(a, b) for a, b in grid(start, EVERY, 24)]


def test_a_store_serves_one_event_loop_after_another(postgres_url: str) -> None:
    """The CLI runs each step in its own `asyncio.run`: the store reconnects on each loop, and
    closing it on yet another loop closes what the earlier loops left idle."""
    store = PostgresStateStore(postgres_url)
    assert asyncio.run(store.ensure_job("j", T0)) == T0
    assert asyncio.run(store.watermark("j")) == T0
    asyncio.run(store.aclose())


async def test_a_worker_with_table_rights_only_opens_a_current_schema(
    postgres: ThrowawayPostgres, postgres_url: str
) -> None:
    """As the README says: once the owner has migrated, a role with CONNECT and the four table
    rights (no CREATE) runs the store."""
    async with PostgresStateStore(postgres_url):
        pass  # migrated by the owner
    postgres.execute("CREATE ROLE tierflow_worker LOGIN")
    try:
        for grant in (
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO tierflow_worker",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
            "TO tierflow_worker",
        ):
            postgres.execute(grant, postgres_url)
        worker_url = postgres_url.replace("//postgres@", "//tierflow_worker@")
        async with PostgresStateStore(worker_url) as store:
            assert await store.ensure_job("j", T0) == T0
            assert await store.claim(
                "j", windows(1), run_id="r1", started_at=T0, lease_expires_at=T0 + LEASE
            )
            outcome = Outcome(RunStatus.SUCCEEDED, T0, 0.1)
            assert await store.finish("j", windows(1), run_id="r1", outcome=outcome) == T0 + STEP
        rows = postgres.execute(
            "SELECT has_schema_privilege('tierflow_worker', 'public', 'CREATE')", postgres_url
        )
        assert rows == [(False,)]
    finally:
        postgres.execute("REASSIGN OWNED BY tierflow_worker TO postgres", postgres_url)
        postgres.execute("DROP OWNED BY tierflow_worker", postgres_url)
        postgres.execute("DROP ROLE tierflow_worker")
