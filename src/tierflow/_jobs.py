"""Turning a job and a batch of windows into the query that runs them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from tierflow._config import Config, JobConfig
from tierflow._engines import Series
from tierflow._planner import Batch
from tierflow._templates import RenderedQuery, render
from tierflow._windows import EPOCH

__all__ = ["fingerprints", "render_fingerprint", "render_job"]


def _context(config: Config, name: str, batch: Batch) -> dict[str, Any]:
    job: JobConfig = config.jobs[name]
    source, dest = config.tiers[job.source], config.tiers[job.dest]
    return {
        "measurements": [{"name": m, "into": job.dest_measurement(m)} for m in job.measurements],
        "aggregates": [
            {"function": fn, "field": field, "alias": f"{field}_{fn}"}
            for field, functions in job.aggregates.items()
            for fn in functions
        ],
        "source": {"database": source.database, "retention_policy": source.retention_policy},
        "dest": {"database": dest.database, "retention_policy": dest.retention_policy},
        "range": {"start": batch.range.start, "stop": batch.range.stop},
        "bucket": {"every": batch.every, "offset": batch.offset},
        "tags": dict(job.tags),
    }


def render_job(config: Config, name: str, batch: Batch) -> RenderedQuery:
    """The exact query text that runs `batch` of job `name`: what `plan` shows and what runs."""
    return render("influxql/downsample.influxql.j2", _context(config, name, batch))


# Aggregates that only accept numbers: a field using one of them can be summed for the fingerprint.
_NUMERIC = frozenset({"mean", "median", "sum", "spread", "stddev", "min", "max"})


def render_fingerprint(config: Config, name: str, batch: Batch) -> RenderedQuery:
    """A read query giving, per window of `batch`, a cheap summary of the job's source data."""
    job = config.jobs[name]
    columns = [{"function": "count", "field": field} for field in job.aggregates]
    columns += [
        {"function": "sum", "field": field}
        for field, functions in job.aggregates.items()
        if _NUMERIC.intersection(functions)
    ]
    return render(
        "influxql/fingerprint.influxql.j2", {**_context(config, name, batch), "columns": columns}
    )


def fingerprints(series: Sequence[Series], batch: Batch) -> dict[datetime, str]:
    """Digest a fingerprint query's result into one short hash per window of `batch`."""
    rows: dict[datetime, list[object]] = {window.start: [] for window in batch.windows}
    for item in sorted(series, key=lambda s: s.name):
        for row in item.values:
            start = EPOCH + timedelta(microseconds=int(row[0]) // 1000)
            if start in rows:
                rows[start].append([item.name, *row[1:]])
    return {
        start: hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        for start, values in rows.items()
    }
