"""The PostgreSQL state store on a real server (`ThrowawayPostgres`: $TIERFLOW_TEST_POSTGRES_URL's,
else a throwaway one): the contract every store passes, its migrations, workers opening and
claiming at once, and errors that name the database but never the password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tierflow._errors import StateError
from tierflow._secrets import EnvSecret
from tierflow._state import Outcome, RunStatus, StateStore, open_state_store
from tierflow._state._postgres import PostgresStateStore, migrations
from tierflow._windows import Window
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
        assert len(await stores[0].history("j", limit=1000)) == 40
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
