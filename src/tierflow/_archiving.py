"""Archive jobs and restores: the cold tier's two directions.

An archive job copies each window of its source measurements, point for point, into the cold
tier's Parquet archive (from 1.x through `/query?chunked=true` CSV, from 2.x through Flux
pivoted to one row per point), then checks the copy against the source before the window counts as
done: per field, the number of values archived must equal InfluxDB's own `count()` over the
same range. A restore reads an archived range back and writes it, field types kept, into a live
tier.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from tierflow._archive import ParquetArchive, PointBatch, open_archive
from tierflow._config import ArchiveJob, Config, TierConfig
from tierflow._engines import Engine
from tierflow._errors import EngineError, QueryError
from tierflow._flux_export import (
    count_script,
    export_flux,
    field_counts,
    is_field_type_conflict,
)
from tierflow._logging import log_event
from tierflow._transfer import Transfer, export_influxql, export_query, write_batches
from tierflow._windows import Window, isoformat

__all__ = ["ArchiveMismatchError", "Archives", "archive_window", "restore"]


class ArchiveMismatchError(QueryError):
    """The archive holds a different number of values than the source: the window is not done."""


@dataclass
class Archives:
    """The open archive of each cold tier, opened once and shared."""

    config: Config
    _open: dict[str, ParquetArchive] = field(default_factory=dict)

    def __call__(self, tier: str) -> ParquetArchive:
        if tier not in self._open:
            url = self.config.tiers[tier].archive
            if url is None:
                raise EngineError(f"tier {tier} is not a cold tier")
            self._open[tier] = open_archive(_local_path(url, self.config))
        return self._open[tier]


def _local_path(url: str, config: Config) -> str:
    """A relative archive path is relative to the config file, like templates."""
    if "://" in url or url.startswith("/"):
        return url
    return str(config.path.parent / url)


async def archive_window(
    engine: Engine, archive: ParquetArchive, job: ArchiveJob, source: TierConfig, window: Window
) -> int:
    """Archive every measurement of `job` for `window`, verified; return the points archived."""
    total = 0
    for measurement in job.measurements:
        archived: Counter[str] = Counter()
        batches = _export(engine, source, measurement, window, job.tags)
        try:
            manifest = await archive.awrite_window(measurement, window, _counted(batches, archived))
        except EngineError as exc:
            if not is_field_type_conflict(exc):
                raise
            # 2.x cannot pivot a field that has two types in the window's shards: archive it
            # unpivoted (a row per field value; the file's column takes the wider type).
            log_event(
                "archive_unpivoted",
                level=logging.WARNING,
                measurement=measurement,
                window_start=isoformat(window.start),
                window_stop=isoformat(window.stop),
                reason=str(exc),
            )
            archived.clear()
            batches = _export(engine, source, measurement, window, job.tags, pivot=False)
            manifest = await archive.awrite_window(measurement, window, _counted(batches, archived))
        expected = await _source_counts(engine, source, measurement, window, job.tags)
        if expected != {name: n for name, n in archived.items() if n}:
            raise ArchiveMismatchError(
                f"archive of {measurement} {window} holds {dict(archived)} values per field, "
                f"the source {expected}: not recorded as done"
            )
        total += manifest.rows
    return total


def _export(
    engine: Engine,
    tier: TierConfig,
    measurement: str,
    window: Window,
    tags: dict[str, str],
    *,
    pivot: bool = True,
) -> AsyncIterator[PointBatch]:
    if engine.dialect == "flux":
        return export_flux(
            engine,
            bucket=tier.bucket,
            measurement=measurement,
            start=window.start,
            stop=window.stop,
            tags=tags,
            pivot=pivot,
        )
    return export_influxql(
        engine,
        database=tier.database,
        retention_policy=tier.retention_policy,
        measurement=measurement,
        start=window.start,
        stop=window.stop,
        tags=tags,
    )


async def _counted(
    batches: AsyncIterator[PointBatch], counts: Counter[str]
) -> AsyncIterator[PointBatch]:
    """Pass batches on, counting the values of each field on the way."""
    async for batch in batches:
        for name in batch.fields:
            column = batch.data.column(name)
            counts[name] += len(column) - column.null_count
        yield batch


async def _source_counts(
    engine: Engine, tier: TierConfig, measurement: str, window: Window, tags: dict[str, str]
) -> dict[str, int]:
    if engine.dialect == "flux":
        script = count_script(
            bucket=tier.bucket,
            measurement=measurement,
            start=window.start,
            stop=window.stop,
            tags=tags,
        )
        return await field_counts(engine, script)
    text = export_query(
        database=tier.database,
        retention_policy=tier.retention_policy,
        measurement=measurement,
        start=window.start,
        stop=window.stop,
        tags=tags,
        select="count(*)",
    )
    counts: dict[str, int] = {}
    for series in await engine.query(text, database=tier.database):
        for row in series.values:
            for column, value in zip(series.columns[1:], row[1:], strict=True):
                if value:
                    counts[column.removeprefix("count_")] = int(value)
    return counts


async def restore(
    archive: ParquetArchive,
    engine: Engine,
    into: TierConfig,
    *,
    start: datetime,
    stop: datetime,
    measurement: str | None,
    max_concurrency: int,
) -> Transfer:
    """Write the archived points of `[start, stop)` (one measurement or all) into `into`.

    A measurement the dest refuses (a field type conflict, a name line protocol cannot carry)
    fails alone and is listed in `Transfer.failures`; the others are still restored."""

    async def batches() -> AsyncIterator[tuple[str, PointBatch]]:
        for archived in archive.read(start, stop, measurement=measurement):
            yield archived.measurement, archived.points

    return await write_batches(
        engine,
        batches(),
        database=into.database,
        retention_policy=into.retention_policy,
        max_concurrency=max_concurrency,
        isolate=True,
    )
