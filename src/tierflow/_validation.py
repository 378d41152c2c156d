"""`tierflow validate`: beyond the config itself, every job's query, rendered for a sample window
and held to the dispatch rules (`_query_checks`); with `online`, each server is asked too.

Offline: the same `render_job` the runner calls before every dispatch, on the job's first window.
Online: each connection's dialect asks its server (`Dialect.check_server`): for 2.x `/health`,
every tier's bucket looked up inside the connection's org, and every Flux query sent to
`POST /api/v2/query/analyze`; for 1.x `/ping` and every tier's database and retention policy
(`SHOW RETENTION POLICIES`). On both, each downsample job's
fields are looked up in its source measurements (`_field_check`): a field the source lacks and
an aggregate its type does not take are problems.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from tierflow._archive import FieldType
from tierflow._clock import utc_now
from tierflow._config import Config, DownsampleJob, QueryJob
from tierflow._engines import Engine, dialect_for
from tierflow._errors import QueryError, TemplateError
from tierflow._field_check import source_field_types, type_problems
from tierflow._jobs import render_fingerprint, render_job
from tierflow._planner import Batch
from tierflow._windows import Window, isoformat

__all__ = [
    "Problem",
    "check_fields",
    "check_jobs",
    "check_servers",
    "pattern_notes",
    "sample_batch",
    "tiers_on",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a config cannot run as it is. `unreachable` marks a server that did not
    answer (not a fault of the config); `warning` something worth saying that does not stop it
    (a source measurement with no data yet)."""

    message: str
    job: str | None = None
    template: str | None = None
    connection: str | None = None
    unreachable: bool = False
    warning: bool = False

    def render(self) -> str:
        where = [
            f"job {self.job}" if self.job else None,
            f"template {self.template}" if self.template else None,
            f"connection {self.connection}" if self.connection else None,
        ]
        prefix = ", ".join(part for part in where if part)
        return f"{prefix}: {self.message}" if prefix else self.message


def sample_batch(config: Config, job: str) -> Batch:
    """The job's first window, as a batch of one."""
    spec = config.jobs[job]
    return Batch((spec.schedule.first_window(spec.start),))


def _template_of(config: Config, job: str) -> str:
    spec = config.jobs[job]
    if isinstance(spec, QueryJob):
        return str(spec.template)
    from tierflow._jobs import downsample_template

    return downsample_template(config, job)


def tiers_on(config: Config, connection: str) -> Iterator[tuple[str, str]]:
    """(tier, bucket) of each tier on `connection`."""
    for name, tier in config.tiers.items():
        if tier.connection == connection:
            yield name, tier.bucket


def check_jobs(config: Config) -> list[Problem]:
    """Render every job for its first window and check the result (no server needed)."""
    problems: list[Problem] = []
    for name, spec in config.jobs.items():
        batch = sample_batch(config, name)
        try:
            render_job(config, name, batch)
            if spec.recheck is not None:
                render_fingerprint(config, name, batch)
        except TemplateError as exc:
            message = str(exc).removeprefix(f"template {_template_of(config, name)}: ")
            problems.append(Problem(message, job=name, template=_template_of(config, name)))
    return problems


async def check_servers(config: Config) -> list[Problem]:
    """Ask every connection's server what only it knows (see the module docstring)."""
    problems: list[Problem] = []
    for name, connection in config.connections.items():
        problems += await dialect_for(connection).check_server(config, name, connection)
    return problems


async def check_fields(config: Config, name: str, engine: Engine) -> list[Problem]:
    """Each downsample job reading through this connection: its fields exist in the source
    measurements and each aggregate takes their types (one lookup per tier and measurement)."""
    now = utc_now()
    known: dict[tuple[str, str], Mapping[str, frozenset[FieldType]] | None] = {}
    problems: list[Problem] = []
    for job, spec in config.jobs.items():
        if not isinstance(spec, DownsampleJob) or config.tiers[spec.source].connection != name:
            continue
        for measurement in spec.measurements:
            key = (spec.source, measurement)
            if key not in known:
                try:
                    known[key] = await source_field_types(
                        engine, config.tiers[spec.source], measurement, now=now
                    )
                except QueryError as exc:
                    problems.append(
                        Problem(f"measurement {measurement!r}: {exc}", job=job, connection=name)
                    )
                    known[key] = None
            if known[key] == {}:
                # A fresh source (nothing written yet) is normal before the first run: say it,
                # do not refuse the config; a field missing beside others is a mistake.
                problems.append(
                    Problem(
                        f"measurement {measurement!r} has no data in tier {spec.source} yet (or "
                        "its name is misspelt): its fields and their types cannot be checked",
                        job=job,
                        connection=name,
                        warning=True,
                    )
                )
            elif (types := known[key]) is not None:
                problems.extend(
                    Problem(message, job=job, connection=name)
                    for message in type_problems(spec, engine.dialect.name, measurement, types)
                )
    return problems + await pattern_notes(config, name, engine, now)


async def pattern_notes(config: Config, name: str, engine: Engine, now: datetime) -> list[Problem]:
    """For each job reading through this connection with a measurement pattern, what the
    pattern resolves to now: the matching measurements with data since the job's start (a
    note, shown as a warning; each window resolves its own when it runs)."""
    notes: list[Problem] = []
    for job, spec in config.jobs.items():
        pattern = spec.pattern
        source = config.tiers[spec.source]
        if pattern is None or source.connection != name or spec.start >= now:
            continue
        since = Window(spec.start, now)
        try:
            listed = await engine.dialect.list_measurements(
                engine, source, since, spec.tags, pattern.matches
            )
        except QueryError as exc:
            notes.append(Problem(f"measurements {pattern.text}: {exc}", job=job, connection=name))
            continue
        chosen = pattern.select(listed)
        found = ", ".join(chosen) if chosen else "none yet (such windows archive 0 points)"
        notes.append(
            Problem(
                f"measurements {pattern.text} resolve now to {len(chosen)} measurement(s) with "
                f"data in tier {spec.source} since {isoformat(spec.start)}: {found}",
                job=job,
                connection=name,
                warning=True,
            )
        )
    return notes
