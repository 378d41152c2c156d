"""Cross-checks between tables: references, tier and job pairings, orgs, and what each job asks
of its engines (refused by the engines' declared capabilities)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from tierflow._config._models import (
    ArchiveJob,
    ConnectionConfig,
    DownsampleJob,
    JobConfig,
    QueryJob,
    TierConfig,
)
from tierflow._config._problems import (
    _Problem,
    _table_name,
)

__all__ = ["_check_job_kinds", "_cross_check", "_listing"]


def _cross_check(
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
    connections: Mapping[str, ConnectionConfig],
) -> list[_Problem]:
    """Checks across valid tables."""
    problems: list[_Problem] = []
    for name, job in jobs.items():
        table = _table_name("jobs", name)
        if job.source in tiers and job.dest in tiers:
            archive_problems = _check_archive_tiers(table, job, tiers)
            if archive_problems or isinstance(job, ArchiveJob):
                problems.extend(archive_problems)
                continue
        try:
            for measurement in job.measurements:
                job.dest_measurement(measurement)
        except ValueError as exc:
            problems.append(_Problem(table, "into", job.into, str(exc)))
            continue
        if job.source in tiers and job.dest in tiers:
            source, dest = tiers[job.source], tiers[job.dest]
            if problem := _cross_org(table, job, source, dest, connections):
                problems.append(problem)
            elif source.connection != dest.connection and not isinstance(job, DownsampleJob):
                problems.append(
                    _Problem(
                        table,
                        "dest",
                        job.dest,
                        f"{job.kind} jobs run on one server: source and dest tiers must share a "
                        "connection (downsample jobs may cross connections: tierflow carries "
                        "their rows)",
                    )
                )
            if source.bucket == dest.bucket and any(
                job.dest_measurement(m) == m for m in job.measurements
            ):
                problems.append(
                    _Problem(
                        table,
                        "dest",
                        job.dest,
                        "dest is the source bucket and the output measurement is the source "
                        "one: set 'into' to write to another measurement",
                    )
                )
    return problems


def _check_archive_tiers(
    table: str, job: JobConfig, tiers: Mapping[str, TierConfig]
) -> list[_Problem]:
    """Archive jobs read a live tier and write a cold one; no other job touches cold tiers."""
    source, dest = tiers[job.source], tiers[job.dest]
    if not isinstance(job, ArchiveJob):
        return [
            _Problem(table, key, getattr(job, key), f"{job.kind} jobs cannot use a cold tier")
            for key, tier in (("source", source), ("dest", dest))
            if tier.is_archive
        ]
    problems = []
    if source.is_archive:
        problems.append(
            _Problem(table, "source", job.source, "must be a live tier, not a cold one")
        )
    if not dest.is_archive:
        problems.append(
            _Problem(table, "dest", job.dest, "must be a cold tier (one with 'archive = ...')")
        )
    return problems


def _org(tier: TierConfig, connections: Mapping[str, ConnectionConfig]) -> str | None:
    from tierflow._engines import dialect_for

    connection = connections.get(tier.connection)
    return dialect_for(connection).scope(connection) if connection is not None else None


def _cross_org(
    table: str,
    job: JobConfig,
    source: TierConfig,
    dest: TierConfig,
    connections: Mapping[str, ConnectionConfig],
) -> _Problem | None:
    """A job reading one org and writing another is refused unless it says so: tokens are often
    all-access within an org, and a typo in a tier should not move data between tenants."""
    orgs = _org(source, connections), _org(dest, connections)
    if None in orgs or orgs[0] == orgs[1] or job.allow_cross_org:
        return None
    return _Problem(
        table,
        "dest",
        job.dest,
        f"source tier {job.source!r} is in org {orgs[0]!r} and dest tier {job.dest!r} in org "
        f"{orgs[1]!r}; set allow_cross_org = true if the job is meant to cross orgs",
    )


def _check_job_kinds(
    path: Path,
    connections: Mapping[str, ConnectionConfig],
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
) -> list[_Problem]:
    """What a job may ask of the engines it uses, by their declared capabilities (`replace`
    deletes on the dest; a relay writes to it; aggregates run on the source; templates are the
    source's dialect)."""
    from tierflow._engines import dialect_for

    problems: list[_Problem] = []
    for name, job in jobs.items():
        table = _table_name("jobs", name)
        tier = tiers.get(job.source)
        connection = connections.get(tier.connection) if tier else None
        dest_tier = tiers.get(job.dest)
        dest = connections.get(dest_tier.connection) if dest_tier else None
        can = dialect_for(dest).capabilities if dest is not None else None
        if job.replace and can is not None and not can.delete_window:
            problems.append(_Problem(table, "replace", True, can.why_not["delete_window"]))
        relay = tier and dest_tier and tier.connection != dest_tier.connection
        if relay and can is not None and not can.write:
            problems.append(_Problem(table, "dest", job.dest, can.why_not["write"]))
        if job.replace and not job.measurements and job.measurement_pattern is None:
            problems.append(
                _Problem(
                    table,
                    "replace",
                    True,
                    "needs 'measurements': they name what to delete from the dest window",
                )
            )
        if isinstance(job, QueryJob):
            problems.extend(_check_template_file(path, table, job, connection))
        elif isinstance(job, DownsampleJob) and connection is not None:
            source = dialect_for(connection).capabilities
            problems.extend(
                _Problem(table, f"aggregates.{field}", list(functions), source.why_not[function])
                for field, functions in job.aggregates.items()
                for function in functions
                if function not in source.aggregates
            )
    return problems


def _check_template_file(
    path: Path, table: str, job: QueryJob, connection: ConnectionConfig | None
) -> list[_Problem]:
    from tierflow._engines import dialect_for

    where = job.template if job.template.is_absolute() else path.parent / job.template
    if not where.is_file():
        return [_Problem(table, "template", str(job.template), f"no such file: {where}")]
    if connection is None:
        return []
    suffix = dialect_for(connection).template_suffix
    if not where.name.endswith(suffix):
        return [
            _Problem(
                table,
                "template",
                str(job.template),
                f"the source connection is {connection.kind}: its templates end in {suffix}",
            )
        ]
    return []


def _listing(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return listed or "none"
