"""Turning a job and a batch of windows into the query that runs them."""

from __future__ import annotations

from functools import cache

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from tierflow._config import Config, DownsampleJob, JobConfig
from tierflow._errors import TemplateError
from tierflow._planner import Batch
from tierflow._templates import RenderedQuery, render

__all__ = ["dest_name", "render_job"]


@cache
def _names() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def dest_name(job: DownsampleJob, measurement: str) -> str:
    """The measurement a downsample writes to: the source name, or the job's `into` template
    (e.g. `"{{ measurement }}_5m"`) rendered for it."""
    if job.into is None:
        return measurement
    try:
        name = _names().from_string(job.into).render(measurement=measurement).strip()
    except jinja2.TemplateError as exc:
        raise TemplateError(f"'into' template {job.into!r}: {exc}") from exc
    if not name:
        raise TemplateError(f"'into' template {job.into!r} renders empty for {measurement!r}")
    return name


def render_job(config: Config, name: str, batch: Batch) -> RenderedQuery:
    """The exact query text that runs `batch` of job `name`: what `plan` shows and what runs."""
    job: JobConfig = config.jobs[name]
    source, dest = config.tiers[job.source], config.tiers[job.dest]
    return render(
        "influxql/downsample.influxql.j2",
        {
            "measurements": [{"name": m, "into": dest_name(job, m)} for m in job.measurements],
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
        },
    )
