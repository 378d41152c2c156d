"""2.x archive export: one measurement's window, pivoted (or unpivoted when the pivot cannot
hold it), staged, and checked against the server's own per-field counts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from tierflow._archive import PointBatch
from tierflow._archive._archive import StagedWindow
from tierflow._archiving import Tally, alongside, checked, counted, warn_unrestorable
from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines._dialect import WindowExport
from tierflow._engines.flux._export import (
    count_script,
    export_flux,
    export_script,
    field_counts,
    is_field_type_conflict,
)
from tierflow._errors import EngineError
from tierflow._logging import log_event
from tierflow._windows import Window, isoformat

__all__ = ["stage_flux"]


async def stage_flux(engine: Engine, export: WindowExport) -> StagedWindow:
    """2.x: pivoted to a row per point, the fast way; unpivoted (a row per field value, each
    typed by its own table) when the pivot cannot hold the window: a field with two types in
    its shards, or an empty string, which a pivoted row cannot tell from a missing value (the
    count check finds it)."""
    archive, job, source = export.archive, export.job, export.source
    measurement, window = export.measurement, export.window
    script = count_script(
        bucket=source.bucket,
        measurement=measurement,
        start=window.start,
        stop=window.stop,
        tags=job.tags,
    )
    archived = Tally(flavour=engine.dialect.line_protocol)
    try:
        batches = _flux_batches(engine, source, measurement, window, job.tags, pivot=True)
        staged, expected = await alongside(
            archive.astage_window(measurement, window, counted(batches, archived)),
            field_counts(engine, script),
        )
    except EngineError as exc:
        if not is_field_type_conflict(exc):
            raise
        reason = str(exc)
        expected = await field_counts(engine, script)
    else:
        if expected == archived.nonzero():
            warn_unrestorable(staged, archived)
            return staged
        archive.discard(staged)
        reason = f"pivoted export held {archived.nonzero()} values per field, the source {expected}"
    log_event(
        "archive_unpivoted",
        level=logging.WARNING,
        measurement=measurement,
        window_start=isoformat(window.start),
        window_stop=isoformat(window.stop),
        reason=reason,
    )
    archived = Tally(flavour=engine.dialect.line_protocol)
    batches = _flux_batches(engine, source, measurement, window, job.tags, pivot=False)
    staged = await archive.astage_window(measurement, window, counted(batches, archived))
    return checked(archive, staged, archived, expected)


def _flux_batches(
    engine: Engine,
    tier: TierConfig,
    measurement: str,
    window: Window,
    tags: dict[str, str],
    *,
    pivot: bool,
) -> AsyncIterator[PointBatch]:
    script = export_script(
        bucket=tier.bucket,
        measurement=measurement,
        start=window.start,
        stop=window.stop,
        tags=tags,
        pivot=pivot,
    )
    return export_flux(engine, script)
