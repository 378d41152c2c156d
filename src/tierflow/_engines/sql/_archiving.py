"""Archive jobs from 3.x tiers: one measurement's window exported as Parquet (the server's own
Arrow types), staged, and checked against the server's own per-field counts over the same range.

The table's schema (`information_schema.columns`) is read first: it says which columns are tags
and the one type of each field, and every batch of the answer is checked against it (a field
that changed type under the read fails the window, it is never widened). A Parquet answer that
cannot hold the values exactly (times coerced below nanoseconds) is read again as JSONL typed by
the schema (the Parquet footer says so before a row is staged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from tierflow._archive import PointBatch
from tierflow._archive._archive import StagedWindow
from tierflow._archiving import Tally, alongside, checked, counted, nothing
from tierflow._engines._base import Engine
from tierflow._engines._dialect import WindowExport
from tierflow._engines.sql._export import (
    TableSchema,
    answer_pieces,
    export_jsonl,
    field_counts,
    nanosecond_times,
    read_schema,
    spool,
    spooled_batches,
)
from tierflow._logging import log_event
from tierflow._windows import isoformat

__all__ = ["stage_sql"]


async def stage_sql(engine: Engine, export: WindowExport) -> StagedWindow:
    """Stage one measurement's window of a 3.x tier and check it: per field, the values archived
    equal the server's `count(field)` over the same range and series (counted while the window
    is exported)."""
    archive, job, source = export.archive, export.job, export.source
    measurement, window = export.measurement, export.window
    database = source.database
    schema = await read_schema(engine, database=database, measurement=measurement)
    from tierflow._engines.sql._literals import export_query, tag_filters

    # A filter on a tag the table lacks matches no point (every point lacks that tag), unless
    # it asks for the points without it (`""`): then every point.
    if schema is None or not schema.fields or tag_filters(job.tags, schema.tags) is None:
        return await archive.astage_window(measurement, window, nothing())
    text = export_query(measurement, window.start, window.stop, job.tags, schema.tags)
    archived = Tally(flavour=engine.dialect.line_protocol)
    staged, expected = await alongside(
        _stage(engine, export, schema, text, archived),
        field_counts(
            engine, schema, database=database, start=window.start, stop=window.stop, tags=job.tags
        ),
    )
    return checked(archive, staged, archived, expected)


async def _stage(
    engine: Engine, export: WindowExport, schema: TableSchema, text: str, archived: Tally
) -> StagedWindow:
    """The window as Parquet (spooled first: its footer says whether its times are exact), or
    as JSONL typed by the schema when they are not."""
    archive, measurement, window = export.archive, export.measurement, export.window
    database = export.source.database
    handle = await spool(answer_pieces(engine, text, database=database, fmt="parquet"))
    try:
        batches: AsyncIterator[PointBatch]
        if await asyncio.to_thread(nanosecond_times, handle):
            batches = spooled_batches(handle, measurement=measurement, schema=schema)
        else:
            log_event(
                "archive_jsonl",
                level=logging.WARNING,
                measurement=measurement,
                window_start=isoformat(window.start),
                window_stop=isoformat(window.stop),
                reason="the Parquet answer's times are not in nanoseconds",
            )
            batches = export_jsonl(engine, text, database=database, schema=schema)
        return await archive.astage_window(measurement, window, counted(batches, archived))
    finally:
        handle.close()
