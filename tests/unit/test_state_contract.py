"""The StateStore contract (`tierflow.testing.state_contract`), run against every store."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierflow._state import (
    LedgerEntry,
    MemoryStateStore,
    RunStatus,
    SqliteStateStore,
    StateStore,
)
from tierflow._state import _rules as rules
from tierflow._windows import Window
from tierflow.testing.state_contract import StateStoreContract


class TestMemoryStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[StateStore]:
        async with MemoryStateStore() as made:
            yield made


class TestSqliteStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        async with SqliteStateStore(tmp_path / "s.db") as made:
            yield made


# -- the pure rules of ranges and history rows, against a window-by-window oracle ----------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)


def _window(index: int) -> Window:
    return Window(T0 + index * STEP, T0 + (index + 1) * STEP)


def _done(index: int, attempts: int, skipped: bool) -> LedgerEntry:
    status = RunStatus.SKIPPED if skipped else RunStatus.SUCCEEDED
    return LedgerEntry(
        "j", _window(index), status, attempts, f"r{index}", T0, T0 + index * STEP, None, None
    )


_LEDGERS = st.dictionaries(
    st.integers(0, 80), st.tuples(st.integers(1, 3), st.booleans()), max_size=60
)


@given(_LEDGERS)
def test_folded_ranges_stand_for_exactly_the_windows_folded(
    ledger: dict[int, tuple[int, bool]],
) -> None:
    done = [_done(i, attempts, skipped) for i, (attempts, skipped) in ledger.items()]
    ranges = rules.fold([], done)
    read = [entry for piece in ranges for entry in piece.entries(T0 - STEP)]
    assert [(e.window, e.status, e.attempts) for e in read] == sorted(
        (e.window, e.status, e.attempts) for e in done
    )
    # Folding in two steps (as finishes do) gives the same ranges as in one.
    half = [e for e in done if e.window.start < T0 + 40 * STEP]
    rest = [e for e in done if e.window.start >= T0 + 40 * STEP]
    assert rules.fold(rules.fold([], half), rest) == ranges
    # Ranges are maximal: neighbours that touch differ in what they keep.
    for left, right in itertools.pairwise(ranges):
        assert left.stop < right.start or (left.status, left.attempts) != (
            right.status,
            right.attempts,
        )


@given(st.integers(1, 50), st.sets(st.integers(-3, 53)))
def test_carving_takes_out_exactly_the_windows_taken(count: int, taken: set[int]) -> None:
    (piece,) = rules.fold([], [_done(i, 1, False) for i in range(count)])
    left = rules.carve(piece, {_window(i).start for i in taken})
    read = [e.window for part in left for e in part.entries(T0 - STEP)]
    assert read == [_window(i) for i in range(count) if i not in taken]
    forgotten = [rules.forget_from(piece, _window(i).start) for i in sorted(taken)]
    for i, (kept, gone) in zip(sorted(taken), forgotten, strict=True):
        expect = min(max(i, 0), count)
        assert (kept.count if kept else 0, gone) == (expect, count - expect)


@given(st.integers(1, 60), st.sets(st.integers(0, 59)))
def test_a_split_history_row_partitions_its_windows(count: int, chosen: set[int]) -> None:
    span = Window(T0, T0 + count * STEP)
    parts = rules.split_span(span, count, {_window(i).start for i in chosen})
    each = [
        (Window(part.start + k * STEP, part.start + (k + 1) * STEP), inside)
        for part, windows, inside in parts
        for k in range(windows)
    ]
    assert each == [(_window(i), i in chosen) for i in range(count)]
    assert all(a[2] != b[2] for a, b in itertools.pairwise(parts))  # runs are maximal
