"""The `StateStore` contract (see `tierflow._state._base`) as tests any store must pass.

A store's test module subclasses `StateStoreContract` and gives it a `store` fixture yielding an
empty store (closed after)::

    class TestMyStore(StateStoreContract):
        @pytest.fixture
        async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
            async with MyStore(tmp_path / "state") as made:
                yield made

Every method of the contract is exercised, with expectations computed by hand: jobs and
watermarks, claims and leases, holders, finishing and parking, re-queueing, attempts by reason,
fingerprints, history, census, definitions and reset. Needs pytest and pytest-asyncio (auto mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tierflow._errors import StateError
from tierflow._state import (
    Attempt,
    Claim,
    Holder,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    StateStore,
    Worker,
    WorkerState,
)
from tierflow._windows import Window

__all__ = ["StateStoreContract"]

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
LEASE = timedelta(minutes=10)
JOB = "sensor_5m"
#: Beyond every window of the tests: `compact_before` that folds whatever may be folded.
FAR = T0 + timedelta(days=30)


def window(index: int) -> Window:
    return Window(T0 + index * STEP, T0 + (index + 1) * STEP)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def outcome(status: RunStatus, finished_at: datetime | None = None, **extra: object) -> Outcome:
    return Outcome(status, finished_at or at(100), 0.25, **extra)  # type: ignore[arg-type]


async def claim(
    store: StateStore, indexes: list[int], run_id: str, started: datetime = T0, job: str = JOB
) -> Claim:
    return await store.claim(
        job,
        [window(i) for i in indexes],
        run_id=run_id,
        started_at=started,
        lease_expires_at=started + LEASE,
    )


async def finish(
    store: StateStore, indexes: list[int], run_id: str, status: RunStatus, job: str = JOB
) -> datetime:
    return await store.finish(
        job, [window(i) for i in indexes], run_id=run_id, outcome=outcome(status)
    )


async def run(
    store: StateStore, index: int, status: RunStatus, run_id: str | None = None
) -> datetime:
    """Claim and finish one window in one go; return the new watermark."""
    run_id = run_id or f"run-{index}-{status}"
    assert await claim(store, [index], run_id)
    return await finish(store, [index], run_id, status)


async def snapshot(store: StateStore, job: str = JOB) -> tuple[object, ...]:
    return (
        await store.watermark(job),
        await store.entries(job, T0 - timedelta(days=1)),
        await store.history(job),
    )


ALIVE = Holder("here", 101, "boot:1")
DEAD = Holder("here", 202, "boot:2")


def dead_only(holder: Holder) -> bool:
    return holder == DEAD


async def claim_as(
    store: StateStore,
    indexes: list[int],
    run_id: str,
    holder: Holder | None,
    started: datetime = T0,
    **extra: object,
) -> Claim:
    return await store.claim(
        JOB,
        [window(i) for i in indexes],
        run_id=run_id,
        started_at=started,
        lease_expires_at=started + LEASE,
        holder=holder,
        gone=dead_only,
        **extra,  # type: ignore[arg-type]
    )


OLD = JobDefinition('{"dest":"old"}')
NEW = JobDefinition('{"dest":"new"}')


class StateStoreContract:
    """The tests every `StateStore` must pass. Subclass it (as `Test…`) and override `store`."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[StateStore]:
        """An empty store, closed after the test: every subclass gives its own."""
        raise NotImplementedError("a StateStoreContract subclass must override the store fixture")
        yield  # noqa: PT022 - an async generator, as the overrides are

    # ---------------------------------------------------------------------------------------------
    # Jobs and watermarks

    async def test_unknown_job_has_no_watermark(self, store: StateStore) -> None:
        assert await store.watermark(JOB) is None
        assert await store.jobs() == []

    async def test_ensure_job_registers_at_origin(self, store: StateStore) -> None:
        assert await store.ensure_job(JOB, T0) == T0
        assert await store.watermark(JOB) == T0
        assert await store.jobs() == [JOB]

    async def test_ensure_job_is_idempotent(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        # A second registration, e.g. after the config's start moved, keeps the stored watermark.
        assert await store.ensure_job(JOB, T0 + timedelta(days=30)) == T0
        assert await store.ensure_job(JOB, T0 - timedelta(days=30)) == T0
        assert await store.watermark(JOB) == T0
        assert await store.jobs() == [JOB]

    async def test_ensure_job_keeps_an_advanced_watermark(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        assert await store.ensure_job(JOB, T0) == window(0).stop

    async def test_watermark_is_the_same_instant_whatever_the_zone(self, store: StateStore) -> None:
        origin = datetime(2026, 11, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))  # == T0
        await store.ensure_job(JOB, origin)
        mark = await store.watermark(JOB)
        assert mark == T0
        assert mark is not None
        assert mark.utcoffset() is not None  # aware, never naive

    async def test_jobs_lists_every_registered_job(self, store: StateStore) -> None:
        for name in ("gamma", "alpha", "beta"):
            await store.ensure_job(name, T0)
        await store.ensure_job("alpha", T0 + STEP)
        assert sorted(await store.jobs()) == ["alpha", "beta", "gamma"]

    # ---------------------------------------------------------------------------------------------
    # Claims

    async def test_claim_creates_running_ledger_rows_and_counts_an_attempt(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1", started=at(20))
        assert await store.entries(JOB, T0) == [
            LedgerEntry(JOB, window(i), RunStatus.RUNNING, 1, "r1", at(20), None, at(30), None)
            for i in (0, 1)
        ]

    async def test_each_claim_counts_another_attempt(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1")
        await finish(store, [0], "r1", RunStatus.FAILED)
        assert await claim(store, [0, 1], "r2", started=at(30))
        attempts = {e.window: e.attempts for e in await store.entries(JOB, T0)}
        assert attempts == {window(0): 2, window(1): 1}

    async def test_a_new_claim_clears_the_last_outcome(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1")
        await store.finish(
            JOB, [window(0)], run_id="r1", outcome=outcome(RunStatus.FAILED, error="boom")
        )
        assert await claim(store, [0], "r2", started=at(30))
        (entry,) = await store.entries(JOB, T0)
        assert (entry.status, entry.run_id, entry.error, entry.finished_at) == (
            RunStatus.RUNNING,
            "r2",
            None,
            None,
        )
        assert (entry.started_at, entry.lease_expires_at) == (at(30), at(40))

    async def test_a_live_lease_of_another_run_refuses_that_window_only(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [1], "r1", started=T0)  # lease until T0 + 10 min
        # r2 asks for windows 0-2 while r1 still holds window 1: it gets 0 and 2, and is told who
        # holds 1 and until when.
        taken = await claim(store, [0, 1, 2], "r2", started=at(5))
        assert not taken
        assert taken.taken == (window(0), window(2))
        assert [(e.window, e.run_id, e.lease_expires_at) for e in taken.held] == [
            (window(1), "r1", at(10))
        ]
        by_window = {e.window: (e.run_id, e.attempts) for e in await store.entries(JOB, T0)}
        assert by_window == {window(0): ("r2", 1), window(1): ("r1", 1), window(2): ("r2", 1)}

    async def test_the_lease_is_live_until_the_instant_it_expires(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=T0)
        expiry = T0 + LEASE
        assert not await claim(store, [0], "r2", started=expiry - timedelta(microseconds=1))
        assert await claim(store, [0], "r2", started=expiry)

    async def test_an_expired_lease_can_be_taken_over(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1", started=T0)
        assert await claim(store, [1, 2], "r2", started=at(11))
        by_window = {e.window: (e.run_id, e.attempts) for e in await store.entries(JOB, T0)}
        assert by_window == {window(0): ("r1", 1), window(1): ("r2", 2), window(2): ("r2", 1)}

    async def test_a_finished_window_is_not_held(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=T0)
        await finish(store, [0], "r1", RunStatus.FAILED)
        # The lease time has not passed, but r1 is done with the window: r2 may retry it.
        assert await claim(store, [0], "r2", started=at(1))

    async def test_a_run_may_renew_its_own_claim(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=T0)
        assert await claim(store, [0], "r1", started=at(5))
        (entry,) = await store.entries(JOB, T0)
        assert (entry.run_id, entry.attempts, entry.lease_expires_at) == ("r1", 2, at(15))

    # ---------------------------------------------------------------------------------------------
    # Finishing

    async def test_finish_records_the_outcome(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=at(1))
        result = Outcome(
            RunStatus.FAILED,
            at(2),
            1.5,
            query_hash="q1",
            template_version="t1",
            error="server said no",
        )
        await store.finish(JOB, [window(0)], run_id="r1", outcome=result)
        assert await store.entries(JOB, T0) == [
            LedgerEntry(
                JOB, window(0), RunStatus.FAILED, 1, "r1", at(1), at(2), None, "server said no"
            )
        ]

    async def test_finish_by_a_run_that_lost_its_claim_raises(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=T0)
        assert await claim(store, [0], "r2", started=at(11))  # r1's lease ran out; r2 took over
        before = await snapshot(store)
        with pytest.raises(StateError):
            await finish(store, [0], "r1", RunStatus.SUCCEEDED)
        assert await snapshot(store) == before
        assert await finish(store, [0], "r2", RunStatus.SUCCEEDED) == window(0).stop

    async def test_a_late_finish_after_the_taker_finished_changes_nothing(
        self, store: StateStore
    ) -> None:
        # Fencing: r1 (paused past its lease) comes back after r2 took its windows over and
        # recorded success. r1's failure must neither overwrite r2's outcome nor drag the
        # watermark back, nor count towards parking.
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1", started=T0)
        assert await claim(store, [0, 1], "r2", started=at(11))
        assert await finish(store, [0, 1], "r2", RunStatus.SUCCEEDED) == window(1).stop
        before = await snapshot(store)
        with pytest.raises(StateError):
            await store.finish(
                JOB,
                [window(0), window(1)],
                run_id="r1",
                outcome=outcome(RunStatus.FAILED, error="late"),
                park_after=1,
            )
        assert not await store.renew(
            JOB, [window(0), window(1)], run_id="r1", lease_expires_at=at(60)
        )
        assert await snapshot(store) == before
        assert await store.watermark(JOB) == window(1).stop

    async def test_a_late_finish_after_a_reset_changes_nothing(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=T0)
        assert await store.reset(JOB, NEW, since=None, origin=T0) == 1
        before = await snapshot(store)
        with pytest.raises(StateError):
            await finish(store, [0], "r1", RunStatus.SUCCEEDED)
        assert not await store.renew(JOB, [window(0)], run_id="r1", lease_expires_at=at(60))
        assert await snapshot(store) == before

    async def test_finish_by_a_run_that_never_claimed_raises(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        with pytest.raises(StateError):
            await finish(store, [0], "r1", RunStatus.SUCCEEDED)
        assert await store.watermark(JOB) == T0
        assert await store.entries(JOB, T0) == []

    async def test_a_window_cannot_be_finished_twice(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1")
        await finish(store, [0], "r1", RunStatus.FAILED)
        before = await snapshot(store)
        with pytest.raises(StateError):
            await finish(store, [0], "r1", RunStatus.SUCCEEDED)
        assert await snapshot(store) == before

    async def test_finish_is_all_or_nothing(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1", started=T0)
        assert await claim(store, [1], "r2", started=at(11))  # r1 loses window 1 only
        before = await snapshot(store)
        with pytest.raises(StateError):
            await finish(store, [0, 1], "r1", RunStatus.SUCCEEDED)
        # Window 0 was still r1's, but the failed call must not have recorded it.
        assert await snapshot(store) == before

    async def test_finish_for_an_unregistered_job_raises(self, store: StateStore) -> None:
        assert await claim(store, [0], "r1", job="ghost")
        with pytest.raises(StateError):
            await finish(store, [0], "r1", RunStatus.SUCCEEDED, job="ghost")
        with pytest.raises(StateError):
            await finish(store, [1], "r1", RunStatus.SUCCEEDED, job="nobody")
        assert await store.watermark("ghost") is None

    # ---------------------------------------------------------------------------------------------
    # The watermark

    async def test_watermark_advances_only_over_contiguous_done_windows(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await run(store, 0, RunStatus.SUCCEEDED) == window(0).stop
        assert await run(store, 1, RunStatus.SUCCEEDED) == window(1).stop
        # Window 2 has not run: window 3's success cannot move the watermark past the gap.
        assert await run(store, 3, RunStatus.SUCCEEDED) == window(1).stop
        assert await store.watermark(JOB) == window(1).stop
        # Filling the gap lets it jump over 2 and the already-done 3.
        assert await run(store, 2, RunStatus.SUCCEEDED) == window(3).stop
        assert await store.watermark(JOB) == window(3).stop

    async def test_skipped_windows_count_as_done(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await run(store, 0, RunStatus.SKIPPED) == window(0).stop
        assert await run(store, 1, RunStatus.SUCCEEDED) == window(1).stop

    @pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.ABANDONED])
    async def test_unfinished_windows_hold_the_watermark(
        self, store: StateStore, status: RunStatus
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await run(store, 0, status, run_id="r1") == T0
        assert await run(store, 1, RunStatus.SUCCEEDED) == T0
        assert await store.watermark(JOB) == T0
        # A successful retry of window 0 releases both.
        assert await run(store, 0, RunStatus.SUCCEEDED, run_id="r2") == window(1).stop

    async def test_a_running_window_holds_the_watermark(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "slow")
        assert await run(store, 1, RunStatus.SUCCEEDED) == T0

    async def test_finishing_several_windows_at_once(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1, 2], "r1")
        assert await finish(store, [0, 1, 2], "r1", RunStatus.SUCCEEDED) == window(2).stop
        assert [e.status for e in await store.entries(JOB, T0)] == [RunStatus.SUCCEEDED] * 3

    async def test_watermarks_are_per_job(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await store.ensure_job("other", T0)
        assert await claim(store, [0], "r1", job="other")
        assert await finish(store, [0], "r1", RunStatus.SUCCEEDED, job="other") == window(0).stop
        assert await store.watermark(JOB) == T0
        assert await store.entries(JOB, T0) == []

    # ---------------------------------------------------------------------------------------------
    # History and ledger queries

    async def test_history_keeps_every_attempt_newest_first(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1", started=at(1))
        await store.finish(
            JOB,
            [window(0)],
            run_id="r1",
            outcome=Outcome(
                RunStatus.FAILED,
                at(2),
                1.5,
                query_hash="q1",
                template_version="t1",
                error="timeout",
            ),
        )
        assert await claim(store, [0], "r2", started=at(3))
        await store.finish(
            JOB,
            [window(0)],
            run_id="r2",
            outcome=Outcome(
                RunStatus.SUCCEEDED, at(4), 0.5, query_hash="q2", template_version="t2"
            ),
        )
        assert await claim(store, [1], "r3", started=at(5))

        assert await store.history(JOB) == [
            Attempt(
                JOB, window(1), 1, "r3", RunStatus.RUNNING, at(5), None, None, None, None, None
            ),
            Attempt(
                JOB, window(0), 2, "r2", RunStatus.SUCCEEDED, at(3), at(4), 0.5, "q2", "t2", None
            ),
            Attempt(
                JOB, window(0), 1, "r1", RunStatus.FAILED, at(1), at(2), 1.5, "q1", "t1", "timeout"
            ),
        ]

    async def test_history_limit_keeps_the_newest(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        for index in range(5):
            await run(store, index, RunStatus.SUCCEEDED)
        assert [a.window for a in await store.history(JOB, limit=2)] == [window(4), window(3)]
        assert len(await store.history(JOB)) == 5

    async def test_history_is_per_job(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await store.ensure_job("other", T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        assert await store.history("other") == []
        assert await store.history("never-registered") == []

    async def test_entries_since_are_filtered_and_oldest_first(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await store.ensure_job("other", T0)
        assert await claim(store, [3, 1, 2, 0], "r1")  # claimed out of order on purpose
        assert await claim(store, [2, 3], "r9", job="other")
        assert [e.window for e in await store.entries(JOB, T0)] == [window(i) for i in range(4)]
        # `since` on a window start includes that window.
        assert [e.window for e in await store.entries(JOB, window(2).start)] == [
            window(2),
            window(3),
        ]
        # `since` inside a window excludes it: only windows *starting* at or after it count.
        assert [e.window for e in await store.entries(JOB, window(1).start + STEP / 2)] == [
            window(2),
            window(3),
        ]
        assert await store.entries(JOB, window(4).start) == []
        assert all(e.job == JOB for e in await store.entries(JOB, T0))

    async def test_times_keep_their_microseconds(self, store: StateStore) -> None:
        odd = datetime(2026, 11, 1, 0, 0, 0, 123457, tzinfo=UTC)
        await store.ensure_job(JOB, odd)
        assert await store.watermark(JOB) == odd
        exact = Window(odd, odd + timedelta(seconds=1, microseconds=1))
        assert await store.claim(
            JOB, [exact], run_id="r1", started_at=odd, lease_expires_at=odd + LEASE
        )
        assert await store.finish(
            JOB, [exact], run_id="r1", outcome=outcome(RunStatus.SUCCEEDED)
        ) == (exact.stop)
        (entry,) = await store.entries(JOB, odd)
        assert entry.window == exact
        assert entry.started_at == odd

    # ---------------------------------------------------------------------------------------------
    # Holders: who holds a claim, and what happens when it dies

    async def test_a_claim_records_its_holder(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim_as(store, [0], "r1", ALIVE)
        (entry,) = await store.entries(JOB, T0)
        assert entry.holder == ALIVE
        census = await store.census(JOB, T0, at(60))
        assert census.running == (entry,)

    async def test_the_claim_of_a_dead_holder_is_taken_over_at_once(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim_as(store, [0, 1], "r1", DEAD)
        # Well within r1's lease: its holder is dead, so nobody will finish the windows.
        taken = await claim_as(store, [0, 1], "r2", ALIVE, started=at(1))
        assert taken
        assert taken.taken == (window(0), window(1))
        assert {(e.run_id, e.attempts, e.holder) for e in await store.entries(JOB, T0)} == {
            ("r2", 2, ALIVE)
        }
        abandoned = [a for a in await store.history(JOB) if a.status is RunStatus.ABANDONED]
        assert {(a.run_id, a.error) for a in abandoned} == {
            ("r1", "holder pid 202 on host here died before the run finished")
        }

    @pytest.mark.parametrize("holder", [ALIVE, Holder("elsewhere", 202, "boot:2"), None])
    async def test_the_claim_of_a_live_or_unknown_holder_is_respected(
        self, store: StateStore, holder: Holder | None
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim_as(store, [0], "r1", holder)
        taken = await claim_as(store, [0], "r2", ALIVE, started=at(9))
        assert taken.taken == ()
        assert [(e.run_id, e.holder) for e in taken.held] == [("r1", holder)]
        # Once its lease has expired it is taken over all the same.
        assert await claim_as(store, [0], "r2", ALIVE, started=at(10))

    async def test_a_claim_takes_only_windows_still_due(self, store: StateStore) -> None:
        # Planned as due, then another run finished them: a claim without force leaves them.
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        await run(store, 1, RunStatus.SKIPPED)
        await run(store, 2, RunStatus.FAILED)
        assert await claim(store, [3], "r3")
        await store.finish(
            JOB, [window(3)], run_id="r3", outcome=outcome(RunStatus.FAILED), park_after=1
        )
        before = await store.history(JOB)
        taken = await claim_as(store, [0, 1, 2, 3, 4], "late", ALIVE, started=at(30))
        assert taken.settled == (window(0), window(1), window(3))
        assert taken.taken == (window(2), window(4))
        assert len(await store.history(JOB)) == len(before) + 2

    async def test_a_forced_claim_takes_done_windows_but_not_live_claims(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        assert await claim_as(store, [1], "r1", ALIVE)
        taken = await claim_as(store, [0, 1], "backfill", ALIVE, started=at(1), force=True)
        assert taken.taken == (window(0),)
        assert [e.window for e in taken.held] == [window(1)]

    async def test_census_counts_rows_by_status_inside_the_range(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        await run(store, 1, RunStatus.SKIPPED)
        assert await claim(store, [2], "r2")
        await store.finish(
            JOB, [window(2)], run_id="r2", outcome=outcome(RunStatus.FAILED), park_after=1
        )
        await run(store, 3, RunStatus.FAILED)
        assert await claim_as(store, [4], "r4", ALIVE)
        await run(store, 5, RunStatus.SUCCEEDED)
        census = await store.census(JOB, window(0).start, window(4).stop)  # window 5 is outside
        assert census.counts == {
            (RunStatus.SUCCEEDED, False): 1,
            (RunStatus.SKIPPED, False): 1,
            (RunStatus.FAILED, True): 1,
            (RunStatus.FAILED, False): 1,
            (RunStatus.RUNNING, False): 1,
        }
        assert [(e.window, e.holder) for e in census.running] == [(window(4), ALIVE)]

    # ---------------------------------------------------------------------------------------------
    # definitions and reset

    async def test_a_job_has_no_definition_until_one_is_recorded(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await store.definition(JOB) is None
        await store.record_definition(JOB, OLD)
        assert await store.definition(JOB) == OLD
        assert await store.definition("other") is None

    async def test_recording_a_definition_replaces_it_and_leaves_the_ledger(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        await store.record_definition(JOB, OLD)
        before = await snapshot(store)
        await store.record_definition(JOB, NEW)
        assert await store.definition(JOB) == NEW
        assert await snapshot(store) == before

    async def test_definitions_are_per_job(self, store: StateStore) -> None:
        await store.record_definition(JOB, OLD)
        await store.record_definition("other", NEW)
        assert (await store.definition(JOB), await store.definition("other")) == (OLD, NEW)

    async def test_reset_forgets_the_whole_ledger_by_default(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        for index in range(3):
            await run(store, index, RunStatus.SUCCEEDED)
        await store.record_definition(JOB, OLD)
        assert await store.reset(JOB, NEW, since=None, origin=T0) == 3
        assert await store.watermark(JOB) == T0
        assert await store.entries(JOB, T0 - timedelta(days=1)) == []
        assert await store.definition(JOB) == NEW
        assert len(await store.history(JOB)) == 3  # the history stays
        assert await store.jobs() == [JOB]

    async def test_reset_from_a_window_keeps_the_ledger_before_it(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        for index in range(4):
            await run(store, index, RunStatus.SUCCEEDED)
        assert await store.reset(JOB, NEW, since=window(2).start, origin=T0) == 2
        assert await store.watermark(JOB) == window(2).start
        assert [e.window for e in await store.entries(JOB, T0)] == [window(0), window(1)]

    async def test_reset_from_beyond_the_watermark_keeps_the_watermark(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        await run(store, 1, RunStatus.FAILED)
        await run(store, 2, RunStatus.SUCCEEDED)
        assert await store.reset(JOB, NEW, since=window(2).start, origin=T0) == 1
        assert await store.watermark(JOB) == window(1).start
        assert [e.window for e in await store.entries(JOB, T0)] == [window(0), window(1)]

    async def test_a_forgotten_window_runs_again_numbering_on_with_a_fresh_budget(
        self,
        store: StateStore,
    ) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.FAILED, run_id="a")
        await run(store, 0, RunStatus.FAILED, run_id="b")
        await store.reset(JOB, NEW, since=None, origin=T0)
        assert await claim(store, [0], "c")
        (entry,) = await store.entries(JOB, T0)
        assert entry.attempts == 3
        assert entry.attempt_base == 2
        # Parking counts the attempts since the reset only: one failure is not two.
        await store.finish(
            JOB, [window(0)], run_id="c", outcome=outcome(RunStatus.FAILED), park_after=2
        )
        assert not (await store.entries(JOB, T0))[0].parked
        assert [a.attempt for a in await store.history(JOB)] == [3, 2, 1]
        assert await store.watermark(JOB) == T0

    async def test_reset_of_a_job_never_registered_records_the_definition(
        self, store: StateStore
    ) -> None:
        assert await store.reset(JOB, NEW, since=None, origin=T0) == 0
        assert await store.definition(JOB) == NEW
        assert await store.watermark(JOB) is None
        assert await store.jobs() == []

    async def test_reset_leaves_other_jobs_alone(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await store.ensure_job("other", T0)
        await run(store, 0, RunStatus.SUCCEEDED)
        assert await claim(store, [0], "o", job="other")
        await finish(store, [0], "o", RunStatus.SUCCEEDED, job="other")
        await store.record_definition("other", OLD)
        before = await snapshot(store, "other")
        await store.reset(JOB, NEW, since=None, origin=T0)
        assert await snapshot(store, "other") == before
        assert await store.definition("other") == OLD

    # ---------------------------------------------------------------------------------------------
    # Parking, re-queueing and attempt counting

    async def test_a_window_is_parked_after_park_after_failed_attempts(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        for attempt, parked in [(1, False), (2, True)]:
            assert await claim(store, [0], f"r{attempt}", started=at(20 * attempt))
            await store.finish(
                JOB,
                [window(0)],
                run_id=f"r{attempt}",
                outcome=outcome(RunStatus.FAILED),
                park_after=2,
            )
            (entry,) = await store.entries(JOB, T0)
            assert (entry.status, entry.attempts, entry.parked) == (
                RunStatus.FAILED,
                attempt,
                parked,
            )
        # Parked: no longer due, so a plain claim leaves it (settled); the watermark stays.
        refused = await claim(store, [0], "r3", started=at(60))
        assert (refused.taken, refused.held, refused.settled) == ((), (), (window(0),))
        assert await store.watermark(JOB) == T0
        census = await store.census(JOB, T0, at(60))
        assert census.counts == {(RunStatus.FAILED, True): 1}

    async def test_without_park_after_a_window_is_never_parked(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        for k in range(3):
            await run(store, 0, RunStatus.FAILED, run_id=f"r{k}")
        (entry,) = await store.entries(JOB, T0)
        assert (entry.attempts, entry.parked) == (3, False)

    @pytest.mark.parametrize(
        "status", [RunStatus.SUCCEEDED, RunStatus.ABANDONED, RunStatus.SKIPPED]
    )
    async def test_only_a_failure_parks(self, store: StateStore, status: RunStatus) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0], "r1")
        await store.finish(JOB, [window(0)], run_id="r1", outcome=outcome(status), park_after=1)
        (entry,) = await store.entries(JOB, T0)
        assert (entry.status, entry.parked) == (status, False)

    async def test_requeue_unparks_with_a_fresh_attempt_budget(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        for index, park_after in [(0, 1), (1, 1), (2, None)]:
            assert await claim(store, [index], f"first-{index}")
            await store.finish(
                JOB,
                [window(index)],
                run_id=f"first-{index}",
                outcome=outcome(RunStatus.FAILED, at(7)),
                park_after=park_after,
            )
        assert [e.parked for e in await store.entries(JOB, T0)] == [True, True, False]

        # [start, stop): window 0 only.
        assert await store.requeue(JOB, window(0).start, window(1).start) == 1
        zero, one, two = await store.entries(JOB, T0)
        assert (zero.status, zero.parked, zero.attempts, zero.attempt_base) == (
            RunStatus.FAILED,
            False,
            1,
            1,
        )
        assert zero.finished_at is None  # due at once: no retry delay from the last failure
        assert (one.parked, one.attempt_base, one.finished_at) == (True, 0, at(7))
        assert (two.parked, two.attempt_base) == (False, 0)

        # Two attempts more before it parks again: only those since the re-queue count.
        for attempt, parked in [(2, False), (3, True)]:
            run_id = f"again-{attempt}"
            assert await claim(store, [0], run_id, started=at(10 * attempt))
            await store.finish(
                JOB, [window(0)], run_id=run_id, outcome=outcome(RunStatus.FAILED), park_after=2
            )
            entry = (await store.entries(JOB, T0, window(1).start))[0]
            assert (entry.attempts, entry.attempt_base, entry.parked) == (attempt, 1, parked)

        assert await store.requeue("other") == 0
        assert await store.requeue(JOB) == 2  # every parked window: 0 and 1, not 2
        assert [(e.parked, e.attempt_base) for e in await store.entries(JOB, T0)] == [
            (False, 3),
            (False, 1),
            (False, 0),
        ]
        assert await store.requeue(JOB) == 0

    async def test_count_attempts_counts_by_reason_and_job(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await store.ensure_job("other", T0)
        assert await claim(store, [0, 1], "r1")
        await finish(store, [0, 1], "r1", RunStatus.SUCCEEDED)
        for k, run_id in enumerate(["late-1", "late-2"]):
            taken = await store.claim(
                JOB,
                [window(0)],
                run_id=run_id,
                started_at=at(20 + k),
                lease_expires_at=at(30 + k),
                reason="late_data",
                force=True,
            )
            assert taken.taken == (window(0),)
            await finish(store, [0], run_id, RunStatus.SUCCEEDED)
        assert await claim(store, [0], "o1", job="other")
        assert await store.count_attempts(JOB, reason="scheduled") == 2
        assert await store.count_attempts(JOB, reason="late_data") == 2
        assert await store.count_attempts(JOB, reason="backfill") == 0
        assert await store.count_attempts("other", reason="scheduled") == 1
        # Windows 0 and 1 were claimed together: one history row for both.
        assert [(a.reason, a.windows) for a in await store.history(JOB)] == [
            ("late_data", 1),
            ("late_data", 1),
            ("scheduled", 2),
        ]

    # ---------------------------------------------------------------------------------------------
    # Fingerprints and leases

    async def test_fingerprints_are_recorded_and_kept_until_replaced(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1")
        await store.finish(
            JOB,
            [window(0), window(1)],
            run_id="r1",
            outcome=outcome(RunStatus.SUCCEEDED, fingerprints={window(0).start: "fp-a"}),
        )
        assert [e.fingerprint for e in await store.entries(JOB, T0)] == ["fp-a", None]
        # Run again (late data): the fingerprint stays while it runs and if it fails…
        for run_id, status in [("r2", RunStatus.FAILED), ("r3", RunStatus.SUCCEEDED)]:
            taken = await store.claim(
                JOB,
                [window(0)],
                run_id=run_id,
                started_at=at(20),
                lease_expires_at=at(30),
                force=True,
            )
            assert taken.taken == (window(0),)
            assert (await store.entries(JOB, T0))[0].fingerprint == "fp-a"
            prints = {window(0).start: "fp-b"} if status is RunStatus.SUCCEEDED else {}
            await store.finish(
                JOB, [window(0)], run_id=run_id, outcome=outcome(status, fingerprints=prints)
            )
        # …and is replaced by the next one recorded.
        assert [e.fingerprint for e in await store.entries(JOB, T0)] == ["fp-b", None]

    async def test_renew_is_refused_once_any_window_is_lost(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1], "r1")
        assert await store.renew(JOB, [window(0), window(1)], run_id="r1", lease_expires_at=at(25))
        assert [e.lease_expires_at for e in await store.entries(JOB, T0)] == [at(25), at(25)]
        # r2 takes window 1 over once the lease expires.
        assert (await claim(store, [1], "r2", started=at(25))).taken == (window(1),)
        assert not await store.renew(
            JOB, [window(0), window(1)], run_id="r1", lease_expires_at=at(40)
        )
        # All or nothing: window 0's lease did not move either.
        assert [e.lease_expires_at for e in await store.entries(JOB, T0)] == [at(25), at(35)]
        await finish(store, [1], "r2", RunStatus.SUCCEEDED)
        assert not await store.renew(JOB, [window(1)], run_id="r2", lease_expires_at=at(50))
        assert not await store.renew(JOB, [window(5)], run_id="r1", lease_expires_at=at(50))

    async def test_a_store_is_an_async_context_manager(self, store: StateStore) -> None:
        async with store as same:
            assert same is store
        await store.aclose()  # closing twice is harmless

    # ---------------------------------------------------------------------------------------------
    # Ledger ranges: done windows behind the watermark folded into one row

    async def test_finish_folds_done_windows_behind_the_watermark(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        before = await _run_folded(store, range(10), "r1", compact_before=None)
        assert [e.run_id for e in before] == ["r1"] * 10
        # The next finish folds every done window behind the watermark that stops in time.
        await _run_folded(store, [10], "r2", compact_before=window(10).stop)
        after = await store.entries(JOB, T0)
        assert [_essence(e) for e in after] == [_essence(e) for e in before] + [
            (window(10), RunStatus.SUCCEEDED, 1, 0, None)
        ]
        # Folded: per-window run ids (and fingerprints, holders) are not kept.
        assert {e.run_id for e in after} == {None}
        assert await store.watermark(JOB) == window(10).stop
        census = await store.census(JOB, T0, window(10).stop)
        assert census.counts == {(RunStatus.SUCCEEDED, False): 11}
        assert census.running == ()
        # A census or entries over part of the range count only the windows inside it.
        part = await store.census(JOB, window(2).start + STEP / 2, window(5).stop)
        assert part.counts == {(RunStatus.SUCCEEDED, False): 3}  # windows 3, 4, 5
        middle = await store.entries(JOB, window(3).start, window(6).start)
        assert [e.window for e in middle] == [window(3), window(4), window(5)]

    async def test_folding_keeps_rows_the_caller_still_needs(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        prints = {window(i).start: f"fp-{i}" for i in range(6)}
        assert await claim(store, list(range(6)), "r1")
        await store.finish(
            JOB,
            [window(i) for i in range(6)],
            run_id="r1",
            outcome=outcome(RunStatus.SUCCEEDED, fingerprints=prints),
            compact_before=window(3).stop,  # e.g. the start of a recheck period
        )
        entries = await store.entries(JOB, T0)
        assert [(e.run_id, e.fingerprint) for e in entries] == [(None, None)] * 4 + [
            ("r1", "fp-4"),
            ("r1", "fp-5"),
        ]
        assert await store.watermark(JOB) == window(5).stop

    async def test_running_failed_and_parked_windows_are_never_folded(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await _run_folded(store, [0, 1], "r1")
        assert await claim(store, [2], "r2")
        await store.finish(
            JOB, [window(2)], run_id="r2", outcome=outcome(RunStatus.FAILED), park_after=1
        )
        await _run_folded(store, [3], "r3")
        # The watermark stops at the parked window: nothing past it folds.
        assert await store.watermark(JOB) == window(2).start
        entries = await store.entries(JOB, T0)
        assert [(e.status, e.parked, e.run_id) for e in entries] == [
            (RunStatus.SUCCEEDED, False, None),
            (RunStatus.SUCCEEDED, False, None),
            (RunStatus.FAILED, True, "r2"),
            (RunStatus.SUCCEEDED, False, "r3"),
        ]

    async def test_a_forced_claim_carves_its_windows_out_of_a_range(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await _run_folded(store, range(10), "r1")
        assert not await claim(store, [3], "late")  # not forced: settled, as before folding
        taken = await store.claim(
            JOB,
            [window(3), window(4)],
            run_id="bf",
            started_at=at(200),
            lease_expires_at=at(210),
            reason="backfill",
            force=True,
        )
        assert taken.taken == (window(3), window(4))
        entries = await store.entries(JOB, T0)
        assert [(e.window, e.status, e.attempts) for e in entries] == [
            (
                window(i),
                RunStatus.RUNNING if i in (3, 4) else RunStatus.SUCCEEDED,
                2 - (i not in (3, 4)),
            )
            for i in range(10)
        ]
        census = await store.census(JOB, T0, window(9).stop)
        assert census.counts == {(RunStatus.SUCCEEDED, False): 8, (RunStatus.RUNNING, False): 2}
        assert [e.window for e in census.running] == [window(3), window(4)]
        # The backfill fails: the watermark moves back to it, and over the rest once it succeeds.
        await store.finish(
            JOB,
            [window(3), window(4)],
            run_id="bf",
            outcome=outcome(RunStatus.FAILED),
            compact_before=at(10_000),
        )
        assert await store.watermark(JOB) == window(3).start
        assert await store.census(JOB, T0, window(9).stop) == type(census)(
            {(RunStatus.SUCCEEDED, False): 8, (RunStatus.FAILED, False): 2}, ()
        )
        await _run_folded(store, [3, 4], "bf2")
        assert await store.watermark(JOB) == window(9).stop
        entries = await store.entries(JOB, T0)
        assert [(e.window, e.status, e.attempts) for e in entries] == [
            (window(i), RunStatus.SUCCEEDED, 3 if i in (3, 4) else 1) for i in range(10)
        ]
        assert {e.run_id for e in entries} == {None}  # all folded again

    async def test_reset_forgets_ranges_too(self, store: StateStore) -> None:
        await store.ensure_job(JOB, T0)
        await _run_folded(store, range(10), "r1")
        assert await store.reset(JOB, NEW, since=window(6).start, origin=T0) == 4
        assert [e.window for e in await store.entries(JOB, T0)] == [window(i) for i in range(6)]
        assert await store.watermark(JOB) == window(6).start
        census = await store.census(JOB, T0, window(9).stop)
        assert census.counts == {(RunStatus.SUCCEEDED, False): 6}
        # A forgotten window is claimed anew, numbering its attempts on.
        assert await claim(store, [7], "again", started=at(300))
        (seven,) = await store.entries(JOB, window(7).start)
        assert seven.attempts == 2
        assert await store.reset(JOB, NEW, since=None, origin=T0) == 7
        assert await store.entries(JOB, T0) == []
        assert await store.watermark(JOB) == T0

    # ---------------------------------------------------------------------------------------------
    # History: one row per attempt at a run of windows claimed together

    async def test_history_keeps_a_claimed_run_of_windows_as_one_row(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        assert await claim(store, [0, 1, 2, 3, 4, 5], "r1", started=at(1))
        (row,) = await store.history(JOB)
        assert (row.window, row.windows, row.attempt, row.status) == (
            Window(window(0).start, window(5).stop),
            6,
            1,
            RunStatus.RUNNING,
        )
        assert row.each() == tuple(window(i) for i in range(6))
        # Finishing part of it splits it: the part finished and the part still running.
        await store.finish(
            JOB, [window(0), window(1)], run_id="r1", outcome=outcome(RunStatus.SUCCEEDED)
        )
        # Another run takes window 3 over once r1's lease expired: r1's attempt there is
        # abandoned, its others still run.
        assert (await claim(store, [3], "r2", started=at(20))).taken == (window(3),)
        await store.finish(
            JOB,
            [window(2), window(4), window(5)],
            run_id="r1",
            outcome=outcome(RunStatus.FAILED, error="boom"),
        )
        rows = sorted(await store.history(JOB), key=lambda a: (a.window.start, a.run_id))
        assert [(a.window, a.windows, a.attempt, a.run_id, a.status, a.error) for a in rows] == [
            (Window(window(0).start, window(1).stop), 2, 1, "r1", RunStatus.SUCCEEDED, None),
            (window(2), 1, 1, "r1", RunStatus.FAILED, "boom"),
            (window(3), 1, 1, "r1", RunStatus.ABANDONED, "lease expired before the run finished"),
            (window(3), 1, 2, "r2", RunStatus.RUNNING, None),
            (Window(window(4).start, window(5).stop), 2, 1, "r1", RunStatus.FAILED, "boom"),
        ]
        assert {a.started_at for a in rows if a.run_id == "r1"} == {at(1)}
        assert await store.count_attempts(JOB, reason="scheduled") == 7

    async def test_a_claim_splits_its_history_by_attempt_and_adjacency(
        self, store: StateStore
    ) -> None:
        await store.ensure_job(JOB, T0)
        await run(store, 1, RunStatus.FAILED)
        assert await claim(store, [0, 1, 2, 4], "r2", started=at(5))
        rows = sorted(
            (a.window, a.windows, a.attempt) for a in await store.history(JOB) if a.run_id == "r2"
        )
        assert rows == [(window(0), 1, 1), (window(1), 1, 2), (window(2), 1, 1), (window(4), 1, 1)]

    async def test_old_history_is_pruned_but_failures_and_unfolded_windows_stay(
        self, store: StateStore
    ) -> None:
        # The default keep_history: 90 days.
        await store.ensure_job(JOB, T0)
        await run(store, 0, RunStatus.FAILED)
        await _run_folded(store, [0, 1, 2], "r2", compact_before=window(1).stop)
        assert await claim(store, [3], "r3", started=at(100))
        later = at(100) + timedelta(days=91)
        await store.finish(
            JOB,
            [window(3)],
            run_id="r3",
            outcome=outcome(RunStatus.SUCCEEDED, finished_at=later),
            compact_before=window(1).stop,
        )
        kept = [(a.run_id, a.window, a.status) for a in await store.history(JOB)]
        assert kept == [
            ("r3", window(3), RunStatus.SUCCEEDED),
            # r2's attempt at window 0 (its second) went, folded; its first attempt at windows
            # 1 and 2 stays: window 2 still has a row of its own.
            ("r2", Window(window(1).start, window(2).stop), RunStatus.SUCCEEDED),
            ("run-0-failed", window(0), RunStatus.FAILED),
        ]
        # Once window 2 is folded too, the next prune (at most every 10 minutes) drops it.
        assert await claim(store, [4], "r4", started=at(100))
        await store.finish(
            JOB,
            [window(4)],
            run_id="r4",
            outcome=outcome(RunStatus.SUCCEEDED, finished_at=later + timedelta(minutes=10)),
            compact_before=window(4).stop,
        )
        after = [(a.run_id, a.status) for a in await store.history(JOB)]
        assert after == [
            ("r4", RunStatus.SUCCEEDED),
            ("r3", RunStatus.SUCCEEDED),
            ("run-0-failed", RunStatus.FAILED),
        ]
        # The ledger is what it was: pruning touches only the history.
        entries = await store.entries(JOB, T0)
        assert [(e.window, e.status, e.attempts) for e in entries] == [
            (window(0), RunStatus.SUCCEEDED, 2),
            *((window(i), RunStatus.SUCCEEDED, 1) for i in range(1, 5)),
        ]

    # ---------------------------------------------------------------------------------------------
    # Workers

    async def test_a_worker_registers_on_its_first_beat_and_each_beat_keeps_it_current(
        self, store: StateStore
    ) -> None:
        me = Holder("host-a", 41, "boot:100")
        first = Worker(me, "1.0", at(0), at(0), ("a", "b"))
        await store.beat(first)
        assert await store.workers(at(0)) == [first]
        later = Worker(me, "1.0", at(0), at(1), ("b",))
        await store.beat(later)
        assert await store.workers(at(0)) == [later]
        # A delayed beat arriving after a later one does not move last_seen back.
        await store.beat(Worker(me, "1.0", at(0), at(0.5), ("b",)))
        assert [w.last_seen for w in await store.workers(at(0))] == [at(1)]
        stopped = Worker(me, "1.0", at(0), at(2), ("b",), stopped_at=at(2))
        await store.beat(stopped)
        assert await store.workers(at(0)) == [stopped]
        assert stopped.state(at(2)) is WorkerState.STOPPED

    async def test_workers_are_named_by_process_and_listed_by_last_beat(
        self, store: StateStore
    ) -> None:
        # The same pid on the same host, started again: another process, another worker.
        old = Worker(Holder("host-a", 41, "boot:100"), "1.0", at(0), at(1))
        again = Worker(Holder("host-a", 41, "boot:900"), "1.1", at(5), at(6), ("a",))
        other = Worker(Holder("host-b", 7, ""), "1.1", at(2), at(6), ("a",))
        for worker in (again, old, other):
            await store.beat(worker)
        assert await store.workers(at(0)) == [old, other, again]  # oldest started first
        assert await store.workers(at(1)) == [old, other, again]  # `since` is inclusive
        assert await store.workers(at(1.5)) == [other, again]
        assert await store.workers(at(7)) == []
        assert old.state(at(1.4)) is WorkerState.LIVE
        assert old.state(at(1.5)) is WorkerState.GONE  # 30 s without a beat

    async def test_a_beat_forgets_the_workers_silent_since_before_it_says(
        self, store: StateStore
    ) -> None:
        silent = Worker(Holder("host-a", 1, "t1"), "1.0", at(0), at(1))
        recent = Worker(Holder("host-a", 2, "t2"), "1.0", at(0), at(3))
        me = Worker(Holder("host-b", 3, "t3"), "1.0", at(0), at(4))
        await store.beat(silent)
        await store.beat(recent)
        await store.beat(me, forget_before=at(2))
        assert await store.workers(T0) == [recent, me]
        await store.beat(me, forget_before=at(3.5))
        assert await store.workers(T0) == [me]


def _essence(entry: LedgerEntry) -> tuple[object, ...]:
    """What folding keeps of a ledger entry."""
    return (entry.window, entry.status, entry.attempts, entry.attempt_base, entry.error)


async def _run_folded(
    store: StateStore,
    indexes: range | list[int],
    run_id: str,
    compact_before: datetime | None = FAR,
) -> list[LedgerEntry]:
    """Claim and finish windows as one successful run, folding what may be; return the ledger."""
    assert await claim(store, list(indexes), run_id, started=at(100))
    await store.finish(
        JOB,
        [window(i) for i in indexes],
        run_id=run_id,
        outcome=outcome(RunStatus.SUCCEEDED),
        compact_before=compact_before,
    )
    return await store.entries(JOB, T0)
