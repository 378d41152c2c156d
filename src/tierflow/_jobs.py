"""Turning a job and a batch of windows into the query that runs them.

The template is picked by the job's kind and its source connection's dialect (found by the
registry from the connection's kind); every rendered query then passes `check_query` before
anyone may send it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tierflow._config import (
    ArchiveJob,
    Config,
    DownsampleJob,
    JobConfig,
    QueryJob,
    TierConfig,
)
from tierflow._engines import Dialect, Series, dialect_for
from tierflow._errors import TemplateError
from tierflow._planner import Batch
from tierflow._query_checks import Target, check_query
from tierflow._templates import DeleteRange, QueryLiteral, RenderedQuery, render, render_file
from tierflow._windows import EPOCH

__all__ = [
    "dest_target",
    "dialect_of",
    "downsample_template",
    "fingerprints",
    "render_fingerprint",
    "render_job",
]


def dialect_of(config: Config, name: str) -> Dialect:
    """The dialect job `name` reads in: its source tier's connection's (found by the registry
    from the connection's kind)."""
    return dialect_for(config.connection_of(config.jobs[name].source))


def downsample_template(config: Config, name: str) -> str:
    """The name of the built-in downsample template job `name` renders."""
    dialect = dialect_of(config, name)
    return f"{dialect.name}/downsample{dialect.template_suffix}"


def _tier(config: Config, tier: TierConfig) -> dict[str, Any]:
    connection = config.connections[tier.connection]
    return {
        "bucket": tier.bucket,
        "org": dialect_for(connection).scope(connection),
        "database": tier.database,
        "retention_policy": tier.retention_policy,
    }


def dest_target(config: Config, name: str) -> Target:
    """Where job `name` may write: its dest tier."""
    tier = config.tiers[config.jobs[name].dest]
    return Target(**_tier(config, tier))


def _context(config: Config, name: str, batch: Batch) -> dict[str, Any]:
    job: JobConfig = config.jobs[name]
    source, dest = config.tiers[job.source], config.tiers[job.dest]
    if isinstance(job, QueryJob):
        return _query_context(config, name, job, batch)
    if isinstance(job, ArchiveJob):
        raise TemplateError(f"job {name}: archive jobs are not rendered from templates")
    return {
        "measurements": [{"name": m, "into": job.dest_measurement(m)} for m in job.measurements],
        "aggregates": [
            {"function": fn, "field": field, "alias": f"{field}_{fn}"}
            for field, functions in job.aggregates.items()
            for fn in functions
        ],
        "source": _tier(config, source),
        "dest": _tier(config, dest),
        "range": {"start": batch.range.start, "stop": batch.range.stop},
        "bucket": {"every": batch.every, "offset": batch.offset},
        "relay": is_relay(config, name),
        "tags": dict(job.tags),
    }


def _query_context(config: Config, name: str, job: QueryJob, batch: Batch) -> dict[str, Any]:
    source, dest = config.tiers[job.source], config.tiers[job.dest]
    return {
        "window": {
            "start": batch.range.start,
            "stop": batch.range.stop,
            "every": batch.every,
            "offset": batch.offset,
        },
        "job": name,
        "source": {**_tier(config, source), "measurements": list(job.measurements)},
        "dest": {
            **_tier(config, dest),
            "measurements": [job.dest_measurement(m) for m in job.measurements],
        },
        "tags": dict(job.tags),
        "params": dict(job.params),
    }


def render_job(
    config: Config, name: str, batch: Batch, resolved: ArchiveJob | None = None
) -> RenderedQuery:
    """The exact query text that runs `batch` of job `name`: what `plan` shows and what runs.
    `resolved` is an archive job with a measurement pattern as resolved for the batch
    (`tierflow._wildcards`); without it such a job renders its listing query, what runs first.

    Raises `TemplateError` (an `UnsafeQueryError` for a query that breaks a dispatch rule) so a
    query that must not run never reaches an engine."""
    job = config.jobs[name]
    if isinstance(job, ArchiveJob):
        return render_export(config, name, batch, resolved)
    dialect = dialect_of(config, name)
    context = _context(config, name, batch)
    if isinstance(job, QueryJob):
        query = render_file(config.template_path(job), str(job.template), context, dialect=dialect)
    else:
        query = render(dialect, "downsample", context)
    check_query(
        query,
        window=batch.range,
        dest=dest_target(config, name),
        require_write=isinstance(job, QueryJob),
    )
    if job.replace:
        query = dataclasses.replace(query, deletes=_deletes(config, name, batch))
    return query


def is_relay(config: Config, name: str) -> bool:
    """A downsample whose dest is on another connection: tierflow carries the rows across."""
    job = config.jobs[name]
    source, dest = config.tiers[job.source], config.tiers[job.dest]
    return isinstance(job, DownsampleJob) and source.connection != dest.connection


def render_relay(config: Config, name: str, batch: Batch) -> list[tuple[str, str, RenderedQuery]]:
    """For a relay, one aggregating read per measurement (a SELECT without INTO from 1.x, a
    pivoted Flux script without `to()` from 2.x), with the measurement it reads and the one it
    is written to."""
    context = _context(config, name, batch)
    dialect = dialect_of(config, name)
    found = []
    for measurement in context["measurements"]:
        query = render(dialect, "downsample", {**context, "measurements": [measurement]})
        check_query(query, window=batch.range, dest=dest_target(config, name), require_write=False)
        found.append((measurement["name"], measurement["into"], query))
    return found


def render_export(
    config: Config, name: str, batch: Batch, resolved: ArchiveJob | None = None
) -> RenderedQuery:
    """What an archive job reads: per measurement, every point of the window (the text that
    `plan` shows and the ledger hashes; `tierflow._archiving` sends the same): a `SELECT *`
    from 1.x, a pivoting Flux script from 2.x. A job with a measurement pattern reads the
    measurements `resolved` holds for the batch; unresolved, it shows the query that lists
    them (no window's measurements are known before it runs)."""
    job = config.jobs[name]
    assert isinstance(job, ArchiveJob)
    dialect = dialect_of(config, name)
    if resolved is not None:
        return dialect.render_export(config, resolved, batch)
    if job.pattern is not None:
        text = dialect.render_measurements(config.tiers[job.source], batch.range, job.tags)
        return RenderedQuery(text, "measurements", "builtin", dialect.name)
    return dialect.render_export(config, job, batch)


def _deletes(config: Config, name: str, batch: Batch) -> tuple[DeleteRange, ...]:
    job = config.jobs[name]
    dest = config.connection_of(job.dest)
    bucket = config.tiers[job.dest].bucket
    tags = tuple(sorted(job.tags.items()))
    deletes = tuple(
        DeleteRange(bucket, measurement, batch.range.start, batch.range.stop, tags)
        for measurement in dict.fromkeys(job.dest_measurement(m) for m in job.measurements)
    )
    for delete in deletes:
        # Refuses what the dest's delete cannot say, before anything runs.
        dialect_for(dest).check_delete(delete)
    return deletes


# What a fingerprint can take of a field, by its type as `SHOW FIELD KEYS` names it: `sum` of
# numbers only ("unsupported sum iterator type" for booleans and strings, seen on 1.6.7), and of
# the job's selectors those the type accepts (min/max take booleans but not strings, seen).
_SUMMABLE = frozenset({"float", "integer", "unsigned"})
_SELECTORS: dict[str | None, tuple[str, ...]] = {
    "boolean": ("min", "max", "first", "last", "mode"),
    "string": ("first", "last", "mode"),
    None: ("min", "max", "first", "last", "mode"),  # type unknown (Flux): the job's own choice
}
FIELD_TYPES = frozenset({*_SUMMABLE, "boolean", "string"})
# Without types (Flux), the job's aggregates are the evidence: these take numbers only.
_NUMERIC_ONLY = frozenset({"mean", "median", "sum", "spread", "stddev"})

# Measurement → field → every type the field has in the source (a field can have several, one
# per shard); None where the dialect cannot say (Flux).
FieldTypes = Mapping[str, Mapping[str, Collection[str]]]


def _column(function: str, field: str, cast: str | None) -> dict[str, Any]:
    shown = f"{field}::{cast}" if cast else field
    literal = QueryLiteral(cast) if cast in FIELD_TYPES else None
    return {"function": function, "field": field, "cast": literal, "alias": f"{function}({shown})"}


def _field_columns(
    field: str, functions: Sequence[str], types: Iterable[str | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A field's fingerprint columns: (across all series, per series). Its point count catches
    a late point; where the type can be summed, the sum catches a rewritten value, and the
    first/last/mode the job asks for a rewritten edge point. No cheap summary of booleans and
    strings catches a rewrite, so for them the fingerprint holds the job's own selectors per
    series: they change exactly when the job's output of them does."""
    totals: list[dict[str, Any]] = []
    per_series: list[dict[str, Any]] = []
    for kind in types:
        totals.append(_column("count", field, kind))
        summable = kind in _SUMMABLE if kind else bool(_NUMERIC_ONLY.intersection(functions))
        if summable:
            totals.append(_column("sum", field, kind))
            totals += [_column(f, field, kind) for f in ("first", "last", "mode") if f in functions]
        else:
            per_series += [_column(f, field, kind) for f in _SELECTORS[kind] if f in functions]
    return totals, per_series


def render_fingerprint(
    config: Config, name: str, batch: Batch, types: FieldTypes | None = None
) -> RenderedQuery:
    """A read query giving, per window of `batch`, a cheap summary of the job's source data.

    `types` (from `SHOW FIELD KEYS`, InfluxQL only) casts each field to each type it has, so a
    field with several types across shards is summarised in all of them; a field without a
    type has no data and no column. Without `types`, InfluxQL assumes every type (the shape
    `check` renders) and Flux takes the job's aggregates as evidence of the type. The text is
    empty when there is nothing to summarise."""
    job = config.jobs[name]
    if not isinstance(job, DownsampleJob):
        raise TemplateError(f"job {name}: only downsample jobs have a source fingerprint")
    dialect = dialect_of(config, name)
    statements = []
    for measurement in job.measurements:
        totals: list[dict[str, Any]] = []
        per_series: list[dict[str, Any]] = []
        for field, functions in job.aggregates.items():
            kinds: Iterable[str | None] = [None]
            if dialect.fingerprint_needs_types():
                kinds = sorted(
                    FIELD_TYPES if types is None else types.get(measurement, {}).get(field, ())
                )
            unknown = [kind for kind in kinds if kind is not None and kind not in FIELD_TYPES]
            if unknown:
                raise TemplateError(
                    f"job {name}: measurement {measurement!r} field {field!r} has type "
                    f"{unknown[0]!r}, which tierflow does not know"
                )
            more, series = _field_columns(field, functions, kinds)
            totals += more
            per_series += series
        statements += [
            {"measurement": measurement, "columns": columns, "per_series": grouped}
            for columns, grouped in ((totals, False), (per_series, True))
            if columns
        ]
    return render(
        dialect, "fingerprint", {**_context(config, name, batch), "statements": statements}
    )


def _stable(value: object) -> object:
    """A fingerprint value that does not move when nothing changed: InfluxDB sums floats in an
    order that depends on storage (last-bit noise); a real change moves a sum far more."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def _absent(value: object) -> bool:
    # An empty bucket is answered with a count of 0 and nulls, or not at all, depending on the
    # rest of the query's range and on which types exist elsewhere: all three mean "nothing".
    return value is None or (value == 0 and not isinstance(value, bool))


def fingerprints(series: Sequence[Series], batch: Batch) -> dict[datetime, str]:
    """Digest a fingerprint query's result into one short hash per window of `batch`."""
    found: dict[datetime, list[object]] = {window.start: [] for window in batch.windows}
    for item in series:
        tags = sorted(item.tags.items())
        for row in item.values:
            start = EPOCH + timedelta(microseconds=int(row[0]) // 1000)
            if start in found:
                found[start] += [
                    [item.name, tags, column, _stable(value)]
                    for column, value in zip(item.columns[1:], row[1:], strict=True)
                    if not _absent(value)
                ]
    return {
        start: hashlib.sha256(json.dumps(sorted(values, key=json.dumps)).encode()).hexdigest()[:16]
        for start, values in found.items()
    }
