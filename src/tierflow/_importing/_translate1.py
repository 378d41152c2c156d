"""One InfluxDB 1.x continuous query → one tierflow job that does the same work, or a job left
commented out, saying why, when tierflow cannot do the same work. Pure: no I/O.

What a CQ does (InfluxDB 1.6 `services/continuous_querier/service.go`, `ExecuteContinuousQuery`):
at each boundary of its `GROUP BY time(interval, offset)` buckets (or every `RESAMPLE EVERY`) it
runs its SELECT … INTO over the buckets that ended since it last ran; `RESAMPLE FOR f` makes each
run cover the last `f` (so a bucket is recomputed until `f - interval` after it ended, and late
data within that is taken in); `RESAMPLE EVERY e` shorter than the interval also writes the current
bucket's partial result, which later runs overwrite. The server replaces any time condition in the
CQ's WHERE with the run's bounds.

The translation is a `downsample` job when tierflow's own query is the CQ's query: every field
`fn(field) AS field_fn` with a tierflow aggregate (tierflow names outputs `{field}_{fn}`), GROUP BY
time and `*` (tierflow keeps every tag), plain measurements from one tier, WHERE only `tag =
'value'` conditions joined by AND, no `fill` other than none/null. Otherwise a `query` job whose
template is the CQ's own SELECT … INTO bounded by the window. Bucket offsets become a cron
schedule whose ticks are the buckets' starts; offsets no cron can express, `TZ()`, `LIMIT`,
`SLIMIT`, `OFFSET`, time conditions, subqueries and fills across resampled windows are refused:
the job is written commented out with the reason.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tierflow._config._models import AGGREGATES
from tierflow._durations import format_duration
from tierflow._errors import InvalidInputError
from tierflow._importing._cq import ContinuousQuery, Name, parse_continuous_query
from tierflow._importing._translation import Translation

__all__ = ["ImportedJob", "Tier", "cron_for", "translate_cq"]

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_WEEK = timedelta(weeks=1)
# The Unix epoch was a Thursday: `GROUP BY time(1w)` buckets start on Thursdays (cron: 4).
_EPOCH_WEEKDAY = 4
_JINJA = re.compile(r"\{[{%#]|[}%#]\}")


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier the imported config declares: a database and retention policy on the server."""

    database: str
    policy: str | None

    @property
    def bucket(self) -> str:
        return self.database if self.policy is None else f"{self.database}/{self.policy}"


@dataclass(slots=True)
class ImportedJob(Translation[Tier]):
    """A CQ's translation (tiers by database and retention policy)."""

    cq_name: str
    database: str
    cq_text: str


def translate_cq(database: str, name: str, text: str, start: datetime) -> ImportedJob:
    """The job doing CQ `name`'s work (`text` as `SHOW CONTINUOUS QUERIES` returns it)."""
    job = ImportedJob(name, database, text)
    try:
        cq = parse_continuous_query(name, text)
    except InvalidInputError as exc:
        job.refused.append(f"its text could not be read: {exc}")
        return job
    job.refused += _refusals(cq)
    schedule = _schedule(cq, job)
    sources = {_tier(source, cq) for source in cq.sources}
    job.source = sorted(sources, key=lambda t: (t.database, t.policy or ""))[0]
    if len(sources) > 1:
        job.notes.append(
            f"it reads {len(sources)} retention policies; the job's source tier is the first "
            "(its query names each as the CQ did)"
        )
    job.dest = _tier(cq.into, cq)
    job.keys = {"kind": "", "source": None, "dest": None, **schedule, "start": start}
    downsample = _downsample_keys(cq, sources)
    if downsample is not None:
        job.kind = "downsample"
        job.keys.update(downsample)
        _resample_downsample(cq, job)
    else:
        job.kind = "query"
        job.keys.update(_query_keys(cq))
        job.template = _template(cq, job)
        _resample_query(cq, job)
    job.keys["kind"] = job.kind
    return job


def _tier(name: Name, cq: ContinuousQuery) -> Tier:
    return Tier(name.database or cq.database, name.policy)


def _refusals(cq: ContinuousQuery) -> Iterable[str]:
    if "tz" in cq.clauses and cq.clauses["tz"].upper() not in {"TZ('UTC')", "TZ('ETC/UTC')"}:
        yield (
            f"{cq.clauses['tz']}: tierflow's windows are UTC; buckets in a time zone (shifting "
            "with daylight saving time) have no UTC schedule"
        )
    for clause in ("limit", "offset", "slimit", "soffset"):
        if clause in cq.clauses:
            yield (
                f"{cq.clauses[clause]}: it limits rows per query, and tierflow's queries cover "
                "other ranges than the CQ's runs, so the rows kept would differ"
            )
    if any(token.word("time") for token in cq.where):
        yield (
            "its WHERE has a time condition, which InfluxDB ignores in a CQ (each run's bounds "
            "replace it); tierflow would apply it: remove it from the query first"
        )
    if any(source.measurement is None and source.regex is None for source in cq.sources):
        yield "a FROM source is not a measurement or a regex"
    if any(a.op("(") and b.word("select") for a, b in itertools.pairwise(cq.where)):
        yield "subqueries are not supported"
    if "(" in cq.clauses["from"]:
        yield "subqueries in FROM are not supported"
    several = _horizon(cq) or (cq.resample_every is not None and cq.resample_every < cq.interval)
    if cq.fill not in {None, "none", "null"} and several:
        yield (
            f"fill({cq.fill}) fills the empty buckets of each CQ run, which covers several "
            "buckets here (RESAMPLE); tierflow runs one window per query, and a window with no "
            "data has nothing to fill"
        )
    if cq.interval % timedelta(seconds=1):
        yield f"GROUP BY time({cq.interval}): tierflow's windows are whole seconds"


def _schedule(cq: ContinuousQuery, job: ImportedJob) -> dict[str, Any]:
    if cq.interval % timedelta(seconds=1):
        return {"every": None}
    if not cq.offset:
        return {"every": format_duration(cq.interval)}
    cron = cron_for(cq.interval, cq.offset)
    if cron is None:
        job.refused.append(
            f"GROUP BY time({format_duration(cq.interval)}, {format_duration(cq.offset)}): "
            "tierflow's shifted windows come from a cron schedule, and no cron expression "
            "ticks at exactly these bucket starts"
        )
        return {"every": format_duration(cq.interval)}
    job.notes.append(
        f"GROUP BY time({format_duration(cq.interval)}, {format_duration(cq.offset)}): its "
        f"buckets start {format_duration(cq.offset)} after the epoch-aligned boundaries; "
        f"cron {cron!r} ticks at exactly those starts (UTC)"
    )
    return {"cron": cron}


def cron_for(interval: timedelta, offset: timedelta) -> str | None:
    """A cron expression (UTC) ticking exactly at the starts of the buckets of
    `GROUP BY time(interval, offset)` (epoch-aligned, shifted by `offset` in [0, interval)), or
    None when there is none."""
    if interval % _MINUTE or offset % _MINUTE or interval < _MINUTE:
        return None
    minutes = offset // _MINUTE
    if interval < _HOUR and _HOUR % interval == timedelta(0):
        step = interval // _MINUTE
        return f"{','.join(str(m) for m in range(minutes % step, 60, step))} * * * *"
    if interval % _HOUR == timedelta(0) and interval <= _DAY and _DAY % interval == timedelta(0):
        step = interval // _HOUR
        first_hour, minute = divmod(minutes, 60)
        hours = "*" if step == 1 else ",".join(str(h) for h in range(first_hour, 24, step))
        return f"{minute} {hours} * * *"
    if interval == _WEEK:
        days, rest = divmod(minutes, 24 * 60)
        hour, minute = divmod(rest, 60)
        return f"{minute} {hour} * * {(_EPOCH_WEEKDAY + days) % 7}"
    return None


def _downsample_keys(cq: ContinuousQuery, sources: set[Tier]) -> dict[str, Any] | None:
    """The downsample job's keys when tierflow's built-in query is exactly the CQ's, else None."""
    aggregates: dict[str, list[str]] = {}
    for item in cq.fields:
        if (
            item.function not in AGGREGATES
            or item.field is None
            or item.alias != f"{item.field}_{item.function}"
            or item.function in aggregates.get(item.field, [])
        ):
            return None
        aggregates.setdefault(item.field, []).append(item.function)
    if len(sources) != 1 or any(s.measurement is None for s in cq.sources):
        return None
    if [d.kind for d in cq.dimensions] != ["star"] or cq.fill not in {None, "none", "null"}:
        return None
    if "order" in cq.clauses:
        return None
    tags = _tag_filters(cq.where)
    if tags is None:
        return None
    measurements = [s.measurement for s in cq.sources if s.measurement is not None]
    keys: dict[str, Any] = {"measurements": measurements}
    into = cq.into.measurement
    if into is not None and (len(measurements) != 1 or into != measurements[0]):
        if _JINJA.search(into):
            return None  # `into` is a template: such a name would be read as template syntax
        keys["into"] = into
    if tags:
        keys["tags"] = tags
    keys["aggregates"] = aggregates
    return keys


def _tag_filters(where: Sequence[Any]) -> dict[str, str] | None:
    """`a = 'x' AND b = 'y'` as {a: x, b: y} (tierflow renders them back the same way); None
    for any other condition."""
    tags: dict[str, str] = {}
    items = list(where)
    while items:
        if len(items) < 3:
            return None
        key, op, value, *items = items
        if key.kind != "ident" or not op.op("=") or value.kind != "string" or key.value in tags:
            return None
        tags[key.value] = value.value
        if items:
            if not items[0].word("and"):
                return None
            items = items[1:]
            if not items:
                return None
    return tags


def _query_keys(cq: ContinuousQuery) -> dict[str, Any]:
    keys: dict[str, Any] = {"template": None}
    measurements = [s.measurement for s in cq.sources]
    if all(m is not None for m in measurements):
        keys["measurements"] = measurements
        into = cq.into.measurement
        if into is not None and into not in measurements and not _JINJA.search(into):
            keys["into"] = into
    return keys


def _template(cq: ContinuousQuery, job: ImportedJob) -> str:
    """The CQ's own SELECT … INTO, its WHERE bounded by the window (as InfluxDB bounds each CQ
    run), every clause carried over as it is."""
    c = cq.clauses
    bounds = (
        "time >= {{ window.start | influxql_time }} AND time < {{ window.stop | influxql_time }}"
    )
    where = bounds
    if "where" in c:
        where += " AND (" + _raw(c["where"][len("WHERE") :].strip(), job) + ")"
    parts = [_raw(c["select"], job), _raw(c["into"], job), _raw(c["from"], job), "WHERE " + where]
    parts += [_raw(c[k], job) for k in ("group", "fill", "order") if k in c]
    return "\n".join(parts) + "\n"


def _raw(text: str, job: ImportedJob) -> str:
    """Literal query text inside a Jinja2 template: what would read as template syntax is kept
    raw."""
    if not _JINJA.search(text):
        return text
    if "endraw" in text:
        job.refused.append("its text holds 'endraw', which a template cannot keep literal")
    return "{% raw %}" + text + "{% endraw %}"


def _resample_downsample(cq: ContinuousQuery, job: ImportedJob) -> None:
    _resample(
        cq,
        job,
        "recheck",
        lambda horizon: (
            f"recheck re-runs the windows that stopped within {horizon} whose source changed "
            "(in the daemon, `tierflow run`; with cron and run-once, set offset = "
            f'"{horizon}" instead)'
        ),
    )


def _resample_query(cq: ContinuousQuery, job: ImportedJob) -> None:
    _resample(
        cq,
        job,
        "offset",
        lambda horizon: (
            f"query jobs cannot recheck, so each window runs once, {horizon} after it ends "
            "(offset), late data within that included"
        ),
    )


def _resample(
    cq: ContinuousQuery, job: ImportedJob, key: str, remedy: Callable[[str], str]
) -> None:
    """Carry a CQ's resampling over: `key` set to how long after a bucket ends the CQ still
    recomputes it, and a note saying so, then what the job does about it (`remedy`)."""
    _resample_every_note(cq, job)
    horizon = _horizon(cq)
    if not horizon:
        return
    job.keys[key] = format_duration(horizon)
    job.notes.append(
        f"{_resample_text(cq)}: the CQ recomputes each bucket until "
        f"{format_duration(horizon)} after it ends; {remedy(format_duration(horizon))}"
    )


def _horizon(cq: ContinuousQuery) -> timedelta:
    """How long after a bucket ends the CQ still recomputes it: a run covers `RESAMPLE FOR`, or
    `RESAMPLE EVERY` when that is longer than the interval and FOR is not given."""
    covered = cq.resample_for
    if covered is None:
        covered = max(cq.interval, cq.resample_every or cq.interval)
    return max(covered - cq.interval, timedelta(0))


def _resample_text(cq: ContinuousQuery) -> str:
    words = []
    if cq.resample_every is not None:
        words.append(f"EVERY {format_duration(cq.resample_every)}")
    if cq.resample_for is not None:
        words.append(f"FOR {format_duration(cq.resample_for)}")
    return "RESAMPLE " + " ".join(words)


def _resample_every_note(cq: ContinuousQuery, job: ImportedJob) -> None:
    every = cq.resample_every
    if every is None or every == cq.interval:
        return
    if every < cq.interval:
        job.notes.append(
            f"RESAMPLE EVERY {format_duration(every)}: the CQ also wrote the current bucket's "
            "partial result every time it ran; tierflow writes each window once it has ended "
            "(the final values are the same)"
        )
    else:
        job.notes.append(
            f"RESAMPLE EVERY {format_duration(every)}: the CQ ran less often than its buckets; "
            "tierflow writes each window as soon as it ends (the values are the same)"
        )
