"""Archive jobs and restores: the cold tier's two directions.

An archive job copies each window of its source measurements, point for point, into the cold
tier's Parquet archive (each dialect exports its own way: `Dialect.stage_window`), then checks
the copy against the source before the window counts as done: per field, the number of values
archived must equal InfluxDB's own `count()` over the same range. A restore reads an archived
range back and writes it, field types kept, into a live tier.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierflow._archive import ParquetArchive, PointBatch, open_archive
from tierflow._archive._archive import StagedWindow
from tierflow._config import ArchiveJob, Config, TierConfig
from tierflow._engines import Engine
from tierflow._engines._dialect import WindowExport
from tierflow._errors import ArchiveMismatchError, ConfigError, EngineError
from tierflow._lineprotocol import (
    V1,
    LineProtocolError,
    check_tag_values,
    escape_key,
    escape_measurement,
)
from tierflow._logging import log_event
from tierflow._transfer import Transfer, write_batches
from tierflow._windows import Window, isoformat

__all__ = [
    "ArchiveMismatchError",
    "Archives",
    "Tally",
    "alongside",
    "archive_window",
    "checked",
    "counted",
    "nothing",
    "restore",
    "warn_unrestorable",
]


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
    """Archive every measurement of `job` for `window`, verified; return the points archived.
    Each measurement is written to a local file and checked against the source first; only
    when every one has passed are they committed, so a window that fails any check leaves
    nothing visible in the archive."""
    staged: list[StagedWindow] = []
    try:
        for measurement in job.measurements:
            # One at a time, so that a failure discards what was staged before it. Each
            # dialect reads and counts its own way.
            export = WindowExport(archive, job, source, measurement, window)
            staged.append(await engine.dialect.stage_window(engine, export))
        return sum([(await archive.acommit(one)).rows for one in staged])
    finally:
        for one in staged:
            archive.discard(one)


async def alongside(
    staging: Coroutine[Any, Any, StagedWindow], counting: Coroutine[Any, Any, dict[str, int]]
) -> tuple[StagedWindow, dict[str, int]]:
    """Stage a window while the server counts the same range: the count takes no longer than
    the export, so the check costs no extra wall time. A failure of either cancels the other
    (and a staged file is discarded by the caller's `finally`, or here)."""
    count = asyncio.ensure_future(counting)
    try:
        staged = await staging
    except BaseException:
        count.cancel()
        with suppress(BaseException):
            await count
        raise
    try:
        return staged, await count
    except BaseException:
        staged.scratch.__exit__()
        raise


def checked(
    archive: ParquetArchive,
    staged: StagedWindow,
    archived: Tally,
    expected: dict[str, int],
) -> StagedWindow:
    warn_unrestorable(staged, archived)
    if expected != archived.nonzero():
        archive.discard(staged)
        raise ArchiveMismatchError(
            f"archive of {staged.measurement} {staged.window} holds {archived.nonzero()} values "
            f"per field, the source {expected}: nothing committed, not recorded as done"
        )
    return staged


async def nothing() -> AsyncIterator[PointBatch]:
    return
    yield  # pragma: no cover - makes this an async generator


@dataclass
class Tally:
    """What passed on the way into the archive: values per field key, and why some tag values
    could not be written back through line protocol."""

    values: Counter[str] = field(default_factory=Counter)
    unrestorable: set[str] = field(default_factory=set)
    #: The line protocol the names and tag values are held to (`Dialect.line_protocol` of the
    #: source: what restoring into a tier of its kind writes with).
    flavour: str = V1

    def nonzero(self) -> dict[str, int]:
        return {name: n for name, n in self.values.items() if n}


async def counted(batches: AsyncIterator[PointBatch], tally: Tally) -> AsyncIterator[PointBatch]:
    """Pass batches on, counting the values of each field (by its key) on the way, and noting
    tag values that line protocol could not carry back (see `warn_unrestorable`)."""
    async for batch in batches:
        for name in batch.fields:
            column = batch.data.column(name)
            tally.values[batch.key(name)] += len(column) - column.null_count
        for name in batch.tags:
            try:
                check_tag_values(batch.key(name), batch.data.column(name), flavour=tally.flavour)
            except LineProtocolError as exc:
                tally.unrestorable.add(str(exc))
        yield batch


def warn_unrestorable(staged: StagedWindow, tally: Tally) -> None:
    """Warn once per window of a measurement holding names or tag values that a restore into a
    tier of the source's kind could not write back through its line protocol (`tally.flavour`:
    3.x reads `\\,` back where 1.x and 2.x cannot). The archive keeps them exactly; only
    restore would refuse them (naming measurement, key and time)."""
    problems = sorted(tally.unrestorable)
    names = [("measurement", staged.measurement)]
    if staged.written is not None:
        names += [(column.kind, column.key) for column in staged.written.columns.values()]
    for kind, name in names:
        try:
            if kind == "measurement":
                escape_measurement(name, flavour=tally.flavour)
            else:
                escape_key(name, field=kind == "field", flavour=tally.flavour)
        except LineProtocolError as exc:
            problems.append(str(exc))
    if problems:
        log_event(
            "archive_unrestorable",
            level=logging.WARNING,
            measurement=staged.measurement,
            window_start=isoformat(staged.window.start),
            window_stop=isoformat(staged.window.stop),
            problems=problems,
        )


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
    fails alone and is listed in `Transfer.failures`; the others are still restored. A tier
    whose engine declares no `write` capability is refused before anything is read."""
    can = engine.dialect.capabilities
    if not can.write:
        raise ConfigError(f"cannot restore into this tier: {can.why_not['write']}")

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
