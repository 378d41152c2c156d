"""Resolving a job's measurement pattern (`measurements = "*"` or `"/regex/"`) for a window.

The measurements are those of the source tier with at least one point in the window (and the
job's tag values), listed by the source's dialect (`Dialect.list_measurements`: bounded to the
window, to the tier's own retention policy or bucket) and matched against the pattern here, so
every engine selects alike. Resolved per window, at run time: a measurement first written
after some windows ran is archived from its first window on, and the job's definition keeps
the pattern, not a list (`tierflow._definitions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierflow._config import ArchiveJob, Config
from tierflow._engines import Engine
from tierflow._logging import log_event
from tierflow._windows import Window, isoformat

__all__ = ["resolve_measurements"]


async def resolve_measurements(
    config: Config,
    job: ArchiveJob,
    engine: Engine,
    window: Window,
    fields: Mapping[str, Any] | None = None,
) -> ArchiveJob:
    """`job` with `measurements` set to those its pattern matches in `window` (possibly
    none: a window without a matching measurement is done with 0 points); a job with a list
    is returned as it is. Engine errors propagate (the attempt fails and is retried)."""
    pattern = job.pattern
    if pattern is None:
        return job
    source = config.tiers[job.source]
    listed = await engine.dialect.list_measurements(
        engine, source, window, job.tags, pattern.matches
    )
    chosen = pattern.select(listed)
    # The window's own bounds: a batch's fields carry the whole batch's range.
    log_event(
        "measurements_resolved" if chosen else "measurements_none_matched",
        **{
            **(fields or {}),
            "window_start": isoformat(window.start),
            "window_stop": isoformat(window.stop),
            "pattern": pattern.text,
            "measurements": chosen,
            "listed": len(listed),
        },
    )
    return job.model_copy(update={"measurements": tuple(chosen)})
