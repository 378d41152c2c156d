"""The StateStore contract (see `tierflow._state._base`), run against every implementation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tierflow._errors import StateError
from tierflow._state import (
    Attempt,
    Claim,
    Holder,
    JobDefinition,
    LedgerEntry,
    MemoryStateStore,
    Outcome,
    RunStatus,
    SqliteStateStore,
    StateStore,
)
from tierflow._windows import Window

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
LEASE = timedelta(minutes=10)
JOB = "sensor_5m"


def window(index: int) -> Window:
    return Window(T0 + index * STEP, T0 + (index + 1) * STEP)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def outcome(status: RunStatus, finished_at: datetime | None = None, **extra: object) -> Outcome:
    return Outcome(status, finished_at or at(100), 0.25, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    made: StateStore = (
        MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "s.db")
    )
    yield made
    made.close()


def claim(
    store: StateStore, indexes: list[int], run_id: str, started: datetime = T0, job: str = JOB
) -> Claim:
    return store.claim(
        job,
        [window(i) for i in indexes],
        run_id=run_id,
        started_at=started,
        lease_expires_at=started + LEASE,
    )


def finish(
    store: StateStore, indexes: list[int], run_id: str, status: RunStatus, job: str = JOB
) -> datetime:
    return store.finish(job, [window(i) for i in indexes], run_id=run_id, outcome=outcome(status))


def run(store: StateStore, index: int, status: RunStatus, run_id: str | None = None) -> datetime:
    """Claim and finish one window in one go; return the new watermark."""
    run_id = run_id or f"run-{index}-{status}"
    assert claim(store, [index], run_id)
    return finish(store, [index], run_id, status)


def snapshot(store: StateStore, job: str = JOB) -> tuple[object, ...]:
    return (store.watermark(job), store.entries(job, T0 - timedelta(days=1)), store.history(job))


# ---------------------------------------------------------------------------------------------
# Jobs and watermarks


def test_unknown_job_has_no_watermark(store: StateStore) -> None:
    assert store.watermark(JOB) is None
    assert store.jobs() == []


def test_ensure_job_registers_at_origin(store: StateStore) -> None:
    assert store.ensure_job(JOB, T0) == T0
    assert store.watermark(JOB) == T0
    assert store.jobs() == [JOB]


def test_ensure_job_is_idempotent(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    # A second registration, e.g. after the config's start moved, keeps the stored watermark.
    assert store.ensure_job(JOB, T0 + timedelta(days=30)) == T0
    assert store.ensure_job(JOB, T0 - timedelta(days=30)) == T0
    assert store.watermark(JOB) == T0
    assert store.jobs() == [JOB]


def test_ensure_job_keeps_an_advanced_watermark(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    assert store.ensure_job(JOB, T0) == window(0).stop


def test_watermark_is_the_same_instant_whatever_the_zone(store: StateStore) -> None:
    origin = datetime(2026, 11, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))  # == T0
    store.ensure_job(JOB, origin)
    mark = store.watermark(JOB)
    assert mark == T0
    assert mark is not None
    assert mark.utcoffset() is not None  # aware, never naive


def test_jobs_lists_every_registered_job(store: StateStore) -> None:
    for name in ("gamma", "alpha", "beta"):
        store.ensure_job(name, T0)
    store.ensure_job("alpha", T0 + STEP)
    assert sorted(store.jobs()) == ["alpha", "beta", "gamma"]


# ---------------------------------------------------------------------------------------------
# Claims


def test_claim_creates_running_ledger_rows_and_counts_an_attempt(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0, 1], "r1", started=at(20))
    assert store.entries(JOB, T0) == [
        LedgerEntry(JOB, window(i), RunStatus.RUNNING, 1, "r1", at(20), None, at(30), None)
        for i in (0, 1)
    ]


def test_each_claim_counts_another_attempt(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1")
    finish(store, [0], "r1", RunStatus.FAILED)
    assert claim(store, [0, 1], "r2", started=at(30))
    attempts = {e.window: e.attempts for e in store.entries(JOB, T0)}
    assert attempts == {window(0): 2, window(1): 1}


def test_a_new_claim_clears_the_last_outcome(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1")
    store.finish(JOB, [window(0)], run_id="r1", outcome=outcome(RunStatus.FAILED, error="boom"))
    assert claim(store, [0], "r2", started=at(30))
    (entry,) = store.entries(JOB, T0)
    assert (entry.status, entry.run_id, entry.error, entry.finished_at) == (
        RunStatus.RUNNING,
        "r2",
        None,
        None,
    )
    assert (entry.started_at, entry.lease_expires_at) == (at(30), at(40))


def test_a_live_lease_of_another_run_refuses_that_window_only(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [1], "r1", started=T0)  # lease until T0 + 10 min
    # r2 asks for windows 0-2 while r1 still holds window 1: it gets 0 and 2, and is told who
    # holds 1 and until when.
    taken = claim(store, [0, 1, 2], "r2", started=at(5))
    assert not taken
    assert taken.taken == (window(0), window(2))
    assert [(e.window, e.run_id, e.lease_expires_at) for e in taken.held] == [
        (window(1), "r1", at(10))
    ]
    by_window = {e.window: (e.run_id, e.attempts) for e in store.entries(JOB, T0)}
    assert by_window == {window(0): ("r2", 1), window(1): ("r1", 1), window(2): ("r2", 1)}


def test_the_lease_is_live_until_the_instant_it_expires(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=T0)
    expiry = T0 + LEASE
    assert not claim(store, [0], "r2", started=expiry - timedelta(microseconds=1))
    assert claim(store, [0], "r2", started=expiry)


def test_an_expired_lease_can_be_taken_over(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0, 1], "r1", started=T0)
    assert claim(store, [1, 2], "r2", started=at(11))
    by_window = {e.window: (e.run_id, e.attempts) for e in store.entries(JOB, T0)}
    assert by_window == {window(0): ("r1", 1), window(1): ("r2", 2), window(2): ("r2", 1)}


def test_a_finished_window_is_not_held(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=T0)
    finish(store, [0], "r1", RunStatus.FAILED)
    # The lease time has not passed, but r1 is done with the window: r2 may retry it.
    assert claim(store, [0], "r2", started=at(1))


def test_a_run_may_renew_its_own_claim(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=T0)
    assert claim(store, [0], "r1", started=at(5))
    (entry,) = store.entries(JOB, T0)
    assert (entry.run_id, entry.attempts, entry.lease_expires_at) == ("r1", 2, at(15))


# ---------------------------------------------------------------------------------------------
# Finishing


def test_finish_records_the_outcome(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=at(1))
    result = Outcome(
        RunStatus.FAILED, at(2), 1.5, query_hash="q1", template_version="t1", error="server said no"
    )
    store.finish(JOB, [window(0)], run_id="r1", outcome=result)
    assert store.entries(JOB, T0) == [
        LedgerEntry(JOB, window(0), RunStatus.FAILED, 1, "r1", at(1), at(2), None, "server said no")
    ]


def test_finish_by_a_run_that_lost_its_claim_raises(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=T0)
    assert claim(store, [0], "r2", started=at(11))  # r1's lease ran out; r2 took over
    before = snapshot(store)
    with pytest.raises(StateError):
        finish(store, [0], "r1", RunStatus.SUCCEEDED)
    assert snapshot(store) == before
    assert finish(store, [0], "r2", RunStatus.SUCCEEDED) == window(0).stop


def test_finish_by_a_run_that_never_claimed_raises(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    with pytest.raises(StateError):
        finish(store, [0], "r1", RunStatus.SUCCEEDED)
    assert store.watermark(JOB) == T0
    assert store.entries(JOB, T0) == []


def test_a_window_cannot_be_finished_twice(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1")
    finish(store, [0], "r1", RunStatus.FAILED)
    before = snapshot(store)
    with pytest.raises(StateError):
        finish(store, [0], "r1", RunStatus.SUCCEEDED)
    assert snapshot(store) == before


def test_finish_is_all_or_nothing(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0, 1], "r1", started=T0)
    assert claim(store, [1], "r2", started=at(11))  # r1 loses window 1 only
    before = snapshot(store)
    with pytest.raises(StateError):
        finish(store, [0, 1], "r1", RunStatus.SUCCEEDED)
    # Window 0 was still r1's, but the failed call must not have recorded it.
    assert snapshot(store) == before


def test_finish_for_an_unregistered_job_raises(store: StateStore) -> None:
    assert claim(store, [0], "r1", job="ghost")
    with pytest.raises(StateError):
        finish(store, [0], "r1", RunStatus.SUCCEEDED, job="ghost")
    with pytest.raises(StateError):
        finish(store, [1], "r1", RunStatus.SUCCEEDED, job="nobody")
    assert store.watermark("ghost") is None


# ---------------------------------------------------------------------------------------------
# The watermark


def test_watermark_advances_only_over_contiguous_done_windows(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert run(store, 0, RunStatus.SUCCEEDED) == window(0).stop
    assert run(store, 1, RunStatus.SUCCEEDED) == window(1).stop
    # Window 2 has not run: window 3's success cannot move the watermark past the gap.
    assert run(store, 3, RunStatus.SUCCEEDED) == window(1).stop
    assert store.watermark(JOB) == window(1).stop
    # Filling the gap lets it jump over 2 and the already-done 3.
    assert run(store, 2, RunStatus.SUCCEEDED) == window(3).stop
    assert store.watermark(JOB) == window(3).stop


def test_skipped_windows_count_as_done(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert run(store, 0, RunStatus.SKIPPED) == window(0).stop
    assert run(store, 1, RunStatus.SUCCEEDED) == window(1).stop


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.ABANDONED])
def test_unfinished_windows_hold_the_watermark(store: StateStore, status: RunStatus) -> None:
    store.ensure_job(JOB, T0)
    assert run(store, 0, status, run_id="r1") == T0
    assert run(store, 1, RunStatus.SUCCEEDED) == T0
    assert store.watermark(JOB) == T0
    # A successful retry of window 0 releases both.
    assert run(store, 0, RunStatus.SUCCEEDED, run_id="r2") == window(1).stop


def test_a_running_window_holds_the_watermark(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "slow")
    assert run(store, 1, RunStatus.SUCCEEDED) == T0


def test_finishing_several_windows_at_once(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0, 1, 2], "r1")
    assert finish(store, [0, 1, 2], "r1", RunStatus.SUCCEEDED) == window(2).stop
    assert [e.status for e in store.entries(JOB, T0)] == [RunStatus.SUCCEEDED] * 3


def test_watermarks_are_per_job(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    store.ensure_job("other", T0)
    assert claim(store, [0], "r1", job="other")
    assert finish(store, [0], "r1", RunStatus.SUCCEEDED, job="other") == window(0).stop
    assert store.watermark(JOB) == T0
    assert store.entries(JOB, T0) == []


# ---------------------------------------------------------------------------------------------
# History and ledger queries


def test_history_keeps_every_attempt_newest_first(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim(store, [0], "r1", started=at(1))
    store.finish(
        JOB,
        [window(0)],
        run_id="r1",
        outcome=Outcome(
            RunStatus.FAILED, at(2), 1.5, query_hash="q1", template_version="t1", error="timeout"
        ),
    )
    assert claim(store, [0], "r2", started=at(3))
    store.finish(
        JOB,
        [window(0)],
        run_id="r2",
        outcome=Outcome(RunStatus.SUCCEEDED, at(4), 0.5, query_hash="q2", template_version="t2"),
    )
    assert claim(store, [1], "r3", started=at(5))

    assert store.history(JOB) == [
        Attempt(JOB, window(1), 1, "r3", RunStatus.RUNNING, at(5), None, None, None, None, None),
        Attempt(JOB, window(0), 2, "r2", RunStatus.SUCCEEDED, at(3), at(4), 0.5, "q2", "t2", None),
        Attempt(
            JOB, window(0), 1, "r1", RunStatus.FAILED, at(1), at(2), 1.5, "q1", "t1", "timeout"
        ),
    ]


def test_history_limit_keeps_the_newest(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    for index in range(5):
        run(store, index, RunStatus.SUCCEEDED)
    assert [a.window for a in store.history(JOB, limit=2)] == [window(4), window(3)]
    assert len(store.history(JOB)) == 5


def test_history_is_per_job(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    store.ensure_job("other", T0)
    run(store, 0, RunStatus.SUCCEEDED)
    assert store.history("other") == []
    assert store.history("never-registered") == []


def test_entries_since_are_filtered_and_oldest_first(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    store.ensure_job("other", T0)
    assert claim(store, [3, 1, 2, 0], "r1")  # claimed out of order on purpose
    assert claim(store, [2, 3], "r9", job="other")
    assert [e.window for e in store.entries(JOB, T0)] == [window(i) for i in range(4)]
    # `since` on a window start includes that window.
    assert [e.window for e in store.entries(JOB, window(2).start)] == [window(2), window(3)]
    # `since` inside a window excludes it: only windows *starting* at or after it count.
    assert [e.window for e in store.entries(JOB, window(1).start + STEP / 2)] == [
        window(2),
        window(3),
    ]
    assert store.entries(JOB, window(4).start) == []
    assert all(e.job == JOB for e in store.entries(JOB, T0))


def test_times_keep_their_microseconds(store: StateStore) -> None:
    odd = datetime(2026, 11, 1, 0, 0, 0, 123457, tzinfo=UTC)
    store.ensure_job(JOB, odd)
    assert store.watermark(JOB) == odd
    exact = Window(odd, odd + timedelta(seconds=1, microseconds=1))
    assert store.claim(JOB, [exact], run_id="r1", started_at=odd, lease_expires_at=odd + LEASE)
    assert store.finish(JOB, [exact], run_id="r1", outcome=outcome(RunStatus.SUCCEEDED)) == (
        exact.stop
    )
    (entry,) = store.entries(JOB, odd)
    assert entry.window == exact
    assert entry.started_at == odd


# ---------------------------------------------------------------------------------------------
# Holders: who holds a claim, and what happens when it dies

ALIVE = Holder("here", 101, "boot:1")
DEAD = Holder("here", 202, "boot:2")


def dead_only(holder: Holder) -> bool:
    return holder == DEAD


def claim_as(
    store: StateStore,
    indexes: list[int],
    run_id: str,
    holder: Holder | None,
    started: datetime = T0,
    **extra: object,
) -> Claim:
    return store.claim(
        JOB,
        [window(i) for i in indexes],
        run_id=run_id,
        started_at=started,
        lease_expires_at=started + LEASE,
        holder=holder,
        gone=dead_only,
        **extra,  # type: ignore[arg-type]
    )


def test_a_claim_records_its_holder(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim_as(store, [0], "r1", ALIVE)
    (entry,) = store.entries(JOB, T0)
    assert entry.holder == ALIVE
    census = store.census(JOB, T0, at(60))
    assert census.running == (entry,)


def test_the_claim_of_a_dead_holder_is_taken_over_at_once(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert claim_as(store, [0, 1], "r1", DEAD)
    # Well within r1's lease: its holder is dead, so nobody will finish the windows.
    taken = claim_as(store, [0, 1], "r2", ALIVE, started=at(1))
    assert taken
    assert taken.taken == (window(0), window(1))
    assert {(e.run_id, e.attempts, e.holder) for e in store.entries(JOB, T0)} == {("r2", 2, ALIVE)}
    abandoned = [a for a in store.history(JOB) if a.status is RunStatus.ABANDONED]
    assert {(a.run_id, a.error) for a in abandoned} == {
        ("r1", "holder pid 202 on host here died before the run finished")
    }


@pytest.mark.parametrize("holder", [ALIVE, Holder("elsewhere", 202, "boot:2"), None])
def test_the_claim_of_a_live_or_unknown_holder_is_respected(
    store: StateStore, holder: Holder | None
) -> None:
    store.ensure_job(JOB, T0)
    assert claim_as(store, [0], "r1", holder)
    taken = claim_as(store, [0], "r2", ALIVE, started=at(9))
    assert taken.taken == ()
    assert [(e.run_id, e.holder) for e in taken.held] == [("r1", holder)]
    # Once its lease has expired it is taken over all the same.
    assert claim_as(store, [0], "r2", ALIVE, started=at(10))


def test_a_claim_takes_only_windows_still_due(store: StateStore) -> None:
    # Planned as due, then another run finished them: a claim without force leaves them.
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    run(store, 1, RunStatus.SKIPPED)
    run(store, 2, RunStatus.FAILED)
    assert claim(store, [3], "r3")
    store.finish(JOB, [window(3)], run_id="r3", outcome=outcome(RunStatus.FAILED), park_after=1)
    before = store.history(JOB)
    taken = claim_as(store, [0, 1, 2, 3, 4], "late", ALIVE, started=at(30))
    assert taken.settled == (window(0), window(1), window(3))
    assert taken.taken == (window(2), window(4))
    assert len(store.history(JOB)) == len(before) + 2


def test_a_forced_claim_takes_done_windows_but_not_live_claims(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    assert claim_as(store, [1], "r1", ALIVE)
    taken = claim_as(store, [0, 1], "backfill", ALIVE, started=at(1), force=True)
    assert taken.taken == (window(0),)
    assert [e.window for e in taken.held] == [window(1)]


def test_census_counts_rows_by_status_inside_the_range(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    run(store, 1, RunStatus.SKIPPED)
    assert claim(store, [2], "r2")
    store.finish(JOB, [window(2)], run_id="r2", outcome=outcome(RunStatus.FAILED), park_after=1)
    run(store, 3, RunStatus.FAILED)
    assert claim_as(store, [4], "r4", ALIVE)
    run(store, 5, RunStatus.SUCCEEDED)
    census = store.census(JOB, window(0).start, window(4).stop)  # window 5 is outside
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

OLD = JobDefinition('{"dest":"old"}')
NEW = JobDefinition('{"dest":"new"}')


def test_a_job_has_no_definition_until_one_is_recorded(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    assert store.definition(JOB) is None
    store.record_definition(JOB, OLD)
    assert store.definition(JOB) == OLD
    assert store.definition("other") is None


def test_recording_a_definition_replaces_it_and_leaves_the_ledger(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    store.record_definition(JOB, OLD)
    before = snapshot(store)
    store.record_definition(JOB, NEW)
    assert store.definition(JOB) == NEW
    assert snapshot(store) == before


def test_definitions_are_per_job(store: StateStore) -> None:
    store.record_definition(JOB, OLD)
    store.record_definition("other", NEW)
    assert (store.definition(JOB), store.definition("other")) == (OLD, NEW)


def test_reset_forgets_the_whole_ledger_by_default(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    for index in range(3):
        run(store, index, RunStatus.SUCCEEDED)
    store.record_definition(JOB, OLD)
    assert store.reset(JOB, NEW, since=None, origin=T0) == 3
    assert store.watermark(JOB) == T0
    assert store.entries(JOB, T0 - timedelta(days=1)) == []
    assert store.definition(JOB) == NEW
    assert len(store.history(JOB)) == 3  # the history stays
    assert store.jobs() == [JOB]


def test_reset_from_a_window_keeps_the_ledger_before_it(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    for index in range(4):
        run(store, index, RunStatus.SUCCEEDED)
    assert store.reset(JOB, NEW, since=window(2).start, origin=T0) == 2
    assert store.watermark(JOB) == window(2).start
    assert [e.window for e in store.entries(JOB, T0)] == [window(0), window(1)]


def test_reset_from_beyond_the_watermark_keeps_the_watermark(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.SUCCEEDED)
    run(store, 1, RunStatus.FAILED)
    run(store, 2, RunStatus.SUCCEEDED)
    assert store.reset(JOB, NEW, since=window(2).start, origin=T0) == 1
    assert store.watermark(JOB) == window(1).start
    assert [e.window for e in store.entries(JOB, T0)] == [window(0), window(1)]


def test_a_forgotten_window_runs_again_numbering_on_with_a_fresh_budget(
    store: StateStore,
) -> None:
    store.ensure_job(JOB, T0)
    run(store, 0, RunStatus.FAILED, run_id="a")
    run(store, 0, RunStatus.FAILED, run_id="b")
    store.reset(JOB, NEW, since=None, origin=T0)
    assert claim(store, [0], "c")
    (entry,) = store.entries(JOB, T0)
    assert entry.attempts == 3
    assert entry.attempt_base == 2
    # Parking counts the attempts since the reset only: one failure is not two.
    store.finish(JOB, [window(0)], run_id="c", outcome=outcome(RunStatus.FAILED), park_after=2)
    assert not store.entries(JOB, T0)[0].parked
    assert [a.attempt for a in store.history(JOB)] == [3, 2, 1]
    assert store.watermark(JOB) == T0


def test_reset_of_a_job_never_registered_records_the_definition(store: StateStore) -> None:
    assert store.reset(JOB, NEW, since=None, origin=T0) == 0
    assert store.definition(JOB) == NEW
    assert store.watermark(JOB) is None
    assert store.jobs() == []


def test_reset_leaves_other_jobs_alone(store: StateStore) -> None:
    store.ensure_job(JOB, T0)
    store.ensure_job("other", T0)
    run(store, 0, RunStatus.SUCCEEDED)
    assert claim(store, [0], "o", job="other")
    finish(store, [0], "o", RunStatus.SUCCEEDED, job="other")
    store.record_definition("other", OLD)
    before = snapshot(store, "other")
    store.reset(JOB, NEW, since=None, origin=T0)
    assert snapshot(store, "other") == before
    assert store.definition("other") == OLD
