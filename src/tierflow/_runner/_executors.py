"""Executors: how one batch of a job's windows is run, one per job kind.

- `ExecuteOnServer`: a downsample or query job whose source and dest share a server; the
  rendered query writes on the server (`SELECT … INTO`, Flux `to()`).
- `Relay`: a downsample whose dest is on another connection; tierflow reads the aggregates
  from the source and writes them to the dest.
- `Archive`: an archive job; each window's points are exported, verified and committed to
  the cold tier.

`attempt` wraps one of them: fingerprint the source (for `recheck`), render, execute, and turn
what happened into an `Attempt`, which the loop records.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from tierflow._config import ArchiveJob, Config, DownsampleJob
from tierflow._engines import Engine
from tierflow._errors import ArchiveMismatchError, EngineError, TemplateError
from tierflow._jobs import (
    dialect_of,
    fingerprints,
    is_relay,
    render_fingerprint,
    render_job,
    render_relay,
)
from tierflow._logging import log_event
from tierflow._planner import Batch
from tierflow._resilience import CircuitOpenError
from tierflow._templates import RenderedQuery
from tierflow._wildcards import resolve_measurements

if TYPE_CHECKING:
    from tierflow._archiving import Archives

__all__ = [
    "Archive",
    "Attempt",
    "ExecuteOnServer",
    "Executed",
    "Executor",
    "Relay",
    "Resources",
    "attempt",
    "executor_for",
    "source_fingerprints",
]


class Resources(Protocol):
    """What executors use: the config, an engine per connection, the archives."""

    @property
    def config(self) -> Config: ...

    def engine(self, connection: str) -> Engine: ...

    def engine_of(self, job: str) -> Engine: ...

    @property
    def archives(self) -> Archives: ...


@dataclass(frozen=True, slots=True)
class Executed:
    """What an executor did with a batch: the points it wrote to the dest tier."""

    points_written: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a batch, as the loop records it."""

    points_written: int = 0
    #: Each window's source fingerprint, taken before the query ran (jobs with `recheck`).
    fingerprints: Mapping[datetime, str] = field(default_factory=dict)
    #: The query rendered for the batch (None: rendering failed).
    query: RenderedQuery | None = None
    #: Why it failed (None: it succeeded).
    error: str | None = None
    #: The connection's circuit breaker refused it: nothing was sent, so it does not count
    #: toward parking the windows (an outage must not park every window).
    refused: bool = False


class Executor(Protocol):
    """Runs one batch of one job's windows, whose query is already rendered and checked."""

    async def __call__(self, batch: Batch, query: RenderedQuery) -> Executed: ...


@dataclass(frozen=True, slots=True)
class ExecuteOnServer:
    """A downsample or query job on one server: the query writes there itself."""

    resources: Resources
    job: str

    async def __call__(self, batch: Batch, query: RenderedQuery) -> Executed:
        config = self.resources.config
        database = config.tiers[config.jobs[self.job].dest].database
        execution = await self.resources.engine_of(self.job).execute(query, database=database)
        return Executed(execution.points_written)


@dataclass(frozen=True, slots=True)
class Relay:
    """Aggregate on the source server, carry the rows over, write them to the dest (1.x or
    2.x on either side). With `replace`, the dest window is deleted first, on the dest."""

    resources: Resources
    job: str
    spec: DownsampleJob

    async def __call__(self, batch: Batch, query: RenderedQuery) -> Executed:
        from tierflow._engines import AggregateRead
        from tierflow._transfer import write_batches

        config = self.resources.config
        source, dest = config.tiers[self.spec.source], config.tiers[self.spec.dest]
        reader, writer = self.resources.engine_of(self.job), self.resources.engine(dest.connection)
        for target in query.deletes:
            await writer.delete(target)
        written = 0
        for measurement, into, read in render_relay(config, self.job, batch):
            aggregating = AggregateRead(source, measurement, self.spec.aggregates, read)
            rows = reader.dialect.aggregate_batches(reader, aggregating)
            moved = await write_batches(
                writer,
                ((into, points) async for points in rows),
                database=dest.database,
                retention_policy=dest.retention_policy,
                max_concurrency=config.connections[dest.connection].max_concurrency,
            )
            written += moved.points
        return Executed(written)


@dataclass(frozen=True, slots=True)
class Archive:
    """Archive each window of the batch to the job's cold tier (see `archive_window`)."""

    resources: Resources
    job: str
    #: The job as it runs the batch: a measurement pattern resolved for the batch's range.
    spec: ArchiveJob
    #: The job with its pattern as configured (None: it lists its measurements).
    pattern: ArchiveJob | None = None

    async def __call__(self, batch: Batch, query: RenderedQuery) -> Executed:
        from tierflow._archiving import archive_window

        config = self.resources.config
        archive = self.resources.archives(self.spec.dest)
        source = config.tiers[self.spec.source]
        engine = self.resources.engine_of(self.job)
        total = 0
        for window in batch.windows:
            spec = self.spec
            if batch.count > 1 and self.pattern is not None:
                # Resolved for the batch (`attempt`): each window takes its own.
                spec = await resolve_measurements(config, self.pattern, engine, window)
            total += await archive_window(engine, archive, spec, source, window)
        return Executed(total)


def executor_for(resources: Resources, job: str, resolved: ArchiveJob | None = None) -> Executor:
    """The executor for `job`'s kind (an archive job's pattern as `resolved` for the batch)."""
    spec = resources.config.jobs[job]
    if isinstance(spec, ArchiveJob):
        if resolved is None:
            return Archive(resources, job, spec)
        return Archive(resources, job, resolved, spec if spec.pattern is not None else None)
    if isinstance(spec, DownsampleJob) and is_relay(resources.config, job):
        return Relay(resources, job, spec)
    return ExecuteOnServer(resources, job)


async def attempt(
    resources: Resources, job: str, batch: Batch, fields: Mapping[str, Any]
) -> Attempt:
    """Fingerprint the source (for `recheck`), then render and run the batch's query. Engine
    and template errors are the attempt's error; anything else is logged as an internal error
    and is the attempt's error too: one batch never takes the runner down."""
    spec = resources.config.jobs[job]
    query = None
    try:
        # Fingerprint before aggregating: data landing in between makes the next recheck
        # see a change and re-run the window (one run too many, never one too few).
        prints = await source_fingerprints(resources, job, batch) if spec.recheck else {}
        resolved = None
        if isinstance(spec, ArchiveJob) and spec.pattern is not None:
            # The batch's measurements, so that the query recorded names what it read.
            engine = resources.engine_of(job)
            resolved = await resolve_measurements(
                resources.config, spec, engine, batch.range, fields
            )
        query = render_job(resources.config, job, batch, resolved)
        executed = await executor_for(resources, job, resolved)(batch, query)
    # A refused query and an archive that came out short are both failed attempts.
    except (EngineError, TemplateError, ArchiveMismatchError) as exc:
        return Attempt(query=query, error=str(exc), refused=isinstance(exc, CircuitOpenError))
    except Exception as exc:
        log_event("window_internal_error", level=logging.ERROR, exc_info=True, **fields)
        return Attempt(query=query, error=f"internal error: {type(exc).__name__}: {exc}")
    return Attempt(executed.points_written, prints, query)


async def source_fingerprints(resources: Resources, job: str, batch: Batch) -> dict[datetime, str]:
    """Each window's fingerprint of the job's source data (what `recheck` compares)."""
    config = resources.config
    spec, engine = config.jobs[job], resources.engine_of(job)
    source = config.tiers[spec.source]
    types = None
    dialect = dialect_of(config, job)
    if dialect.fingerprint_needs_types():
        # Asked every time, not cached: late data may bring a field's first point of
        # another type, and a fingerprint blind to that type would miss it.
        types = {
            measurement: {
                key: {str(kind) for kind in kinds}
                for key, kinds in (
                    await dialect.field_types(engine, source, measurement, now=batch.range.stop)
                ).items()
            }
            for measurement in spec.measurements
        }
    query = render_fingerprint(config, job, batch, types)
    found = await engine.query(query.text, database=source.database) if query.text else []
    return fingerprints(found, batch)
