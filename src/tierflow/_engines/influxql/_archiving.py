"""1.x archive export: one measurement's window, planned from its schema, staged, and checked
against the server's own per-field counts over the same ranges."""

from __future__ import annotations

from tierflow._archive._archive import StagedWindow
from tierflow._archiving import Tally, alongside, checked, counted, nothing
from tierflow._engines._base import Engine
from tierflow._engines._dialect import WindowExport
from tierflow._engines.influxql._export import count_influxql, export_planned, plan_export

__all__ = ["stage_influxql"]


async def stage_influxql(engine: Engine, export: WindowExport) -> StagedWindow:
    """Stage one measurement's window and check it: per field, the values archived equal the
    server's `COUNT` over the same shard ranges."""
    archive, job, source = export.archive, export.job, export.source
    measurement, window = export.measurement, export.window
    plan = await plan_export(
        engine,
        database=source.database,
        retention_policy=source.retention_policy,
        measurement=measurement,
        start=window.start,
        stop=window.stop,
    )
    if plan is None:
        return await archive.astage_window(measurement, window, nothing())
    archived = Tally(flavour=engine.dialect.line_protocol)
    batches = export_planned(engine, plan, tags=job.tags)
    staged, expected = await alongside(
        archive.astage_window(measurement, window, counted(batches, archived)),
        count_influxql(engine, plan, tags=job.tags),
    )
    return checked(archive, staged, archived, expected)
