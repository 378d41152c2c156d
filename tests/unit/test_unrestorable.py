"""The archive's `archive_unrestorable` warning holds names and tag values to the line protocol
of the source's kind (`Dialect.line_protocol`): 3.x reads `\\,` back, 1.x and 2.x do not."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pyarrow as pa
import pytest

from tierflow._archive import PointBatch
from tierflow._archive._archive import StagedWindow
from tierflow._archiving import Tally, counted, warn_unrestorable
from tierflow._engines import dialect_named
from tierflow._lineprotocol import V1, V3
from tierflow._windows import Window

WINDOW = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC) + timedelta(1))


async def warned(
    measurement: str, tag_values: list[str], flavour: str, caplog: pytest.LogCaptureFixture
) -> list[str]:
    data = pa.record_batch(
        {
            "time": pa.array([1] * len(tag_values), pa.int64()),
            "t": tag_values,
            "v": [1.0] * len(tag_values),
        }
    )

    async def one() -> AsyncIterator[PointBatch]:
        yield PointBatch(data, frozenset({"t"}))

    tally = Tally(flavour=flavour)
    async for _ in counted(one(), tally):
        pass
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        warn_unrestorable(StagedWindow(measurement, WINDOW, None, cast(Any, None)), tally)
    return [
        problem
        for record in caplog.records
        if record.getMessage() == "archive_unrestorable"
        for problem in getattr(record, "tierflow_fields", {})["problems"]
    ]


def test_each_dialect_says_its_flavour() -> None:
    assert dialect_named("sql").line_protocol == V3
    assert dialect_named("influxql").line_protocol == V1
    assert dialect_named("flux").line_protocol == V1


async def test_what_3x_reads_back_is_not_warned_about_from_a_3x_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = ["x\\,y", "a\\ b", "c\\=d", "plain"]
    assert await warned("m\\,n", values, V3, caplog) == []
    # The same names held to 1.x's rules: each is one 1.x cannot read back.
    said = await warned("m\\,n", values, V1, caplog)
    assert any("measurement 'm\\\\,n'" in p for p in said), said
    assert any("tag 't'" in p for p in said), said


async def test_what_3x_cannot_carry_is_still_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    said = await warned("m\\", ["ends\\"], V3, caplog)
    assert len(said) == 2, said
    assert all("ends in a backslash" in p for p in said), said
    said = await warned("m", ["two\nlines"], V3, caplog)
    assert any("newline" in p for p in said), said
