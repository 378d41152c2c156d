"""Jobs whose outputs can land on the same point: a config check.

A point is (place, measurement, tag set, field, time). Two downsample jobs writing the same
`{field}_{fn}` of the same measurement into the same place replace each other's points wherever
their timestamps meet (a 5-minute and an hourly mean meet at every full hour), and neither run
fails: the warm tier silently holds whichever ran last. So such pairs are refused here, before
anything runs. Time is not considered: every job runs from its start onwards with no end, and
any two epoch-aligned schedules meet (at the least common multiple of their periods).

- Places: two tier names are one place when they name the same bucket on the same server
  (connection URL, and org on 2.x). On 1.x a tier without a retention policy writes into the
  database's default one, which only the server knows, so it is taken to be any of them.
- Tag sets: a job's `tags` filter keeps only series with those values, and downsampling keeps
  every tag (`GROUP BY *`), so two jobs whose filters give one tag key different values write
  disjoint series. No filter overlaps everything.
- Fields: a downsample job writes exactly `{field}_{fn}`; a query job with declared
  `measurements` writes what its template decides, so any field is assumed (a query job
  without `measurements` is not checked: its outputs are unknown).
- Archive jobs: the cold tier keys a window's file by measurement and window only (not by job,
  source or tags), so two archive jobs of one measurement into one cold tier that can produce
  the same window replace each other's file (data lost); with different windows both files are
  kept and every overlapping point is archived twice (read back twice by `archive query`).
  Both are refused unless the tag filters are disjoint and the windows can never coincide.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations
from urllib.parse import urlsplit

from tierflow._config import (
    ArchiveJob,
    ConnectionConfig,
    DownsampleJob,
    JobConfig,
    TierConfig,
)
from tierflow._config._problems import _Problem, _table_name
from tierflow._engines import dialect_for

__all__ = ["check_overlaps"]

#: Stands for "every field": a query job's template decides what it writes.
_ANY_FIELD = "*"


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a live tier writes: a server, and a bucket or database/retention policy on it."""

    server: tuple[str, str | None]
    database: str
    retention_policy: str | None  # None: 1.x default policy (unknown offline), or a 2.x bucket
    kind: str  # the connection's kind: a 1.x database and a 2.x bucket never meet

    def meets(self, other: _Place) -> bool:
        if (self.server, self.database, self.kind) != (other.server, other.database, other.kind):
            return False
        return (
            self.retention_policy is None
            or other.retention_policy is None
            or self.retention_policy == other.retention_policy
        )


@dataclass(frozen=True, slots=True)
class _Output:
    job: str
    tier: str
    place: _Place
    measurement: str
    source_measurement: str
    tags: Mapping[str, str]
    fields: frozenset[str]


def check_overlaps(
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
    connections: Mapping[str, ConnectionConfig],
) -> list[_Problem]:
    """One problem per pair of jobs (or pair of measurements of one job) whose outputs can
    land on the same point, reported on the later job, naming both and what they share."""
    outputs = list(_outputs(tiers, jobs, connections))
    problems: list[_Problem] = []
    reported: set[tuple[str, str]] = set()
    for first, second in combinations(outputs, 2):
        pair = (first.job, second.job)
        if pair in reported or not _clash(first, second):
            continue
        reported.add(pair)
        problems.append(_live_problem(first, second, jobs[second.job]))
    return problems + _archive_problems(tiers, jobs)


def _server(connection: ConnectionConfig) -> tuple[str, str | None]:
    parts = urlsplit(connection.url)
    path = parts.path.rstrip("/")
    org = dialect_for(connection).scope(connection)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}", org


def _place(tier: TierConfig, connections: Mapping[str, ConnectionConfig]) -> _Place | None:
    connection = connections.get(tier.connection)
    if connection is None or tier.is_archive:
        return None
    where, within = dialect_for(connection).place(connection, tier)
    return _Place(_server(connection), where, within, kind=connection.kind)


def _outputs(
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
    connections: Mapping[str, ConnectionConfig],
) -> Iterator[_Output]:
    for name, job in jobs.items():
        if isinstance(job, ArchiveJob) or job.dest not in tiers:
            continue
        place = _place(tiers[job.dest], connections)
        if place is None:
            continue
        if isinstance(job, DownsampleJob):
            fields = frozenset(f"{f}_{fn}" for f, fns in job.aggregates.items() for fn in fns)
        else:
            fields = frozenset({_ANY_FIELD})
        for measurement in job.measurements:
            try:
                dest = job.dest_measurement(measurement)
            except ValueError:
                continue  # reported with the job's own 'into'
            yield _Output(name, job.dest, place, dest, measurement, job.tags, fields)


def disjoint_tags(first: Mapping[str, str], second: Mapping[str, str]) -> bool:
    """Whether no series can pass both exact-match tag filters."""
    return any(key in second and second[key] != value for key, value in first.items())


def _shared_fields(first: _Output, second: _Output) -> frozenset[str]:
    if _ANY_FIELD in first.fields:
        return second.fields
    if _ANY_FIELD in second.fields:
        return first.fields
    return first.fields & second.fields


def _clash(first: _Output, second: _Output) -> bool:
    return (
        first.measurement == second.measurement
        and first.place.meets(second.place)
        and not disjoint_tags(first.tags, second.tags)
        and bool(_shared_fields(first, second))
    )


def _live_problem(first: _Output, second: _Output, job: JobConfig) -> _Problem:
    fields = sorted(_shared_fields(first, second) - {_ANY_FIELD})
    what = (
        f"field(s) {', '.join(fields)}"
        if fields
        else "fields (a query job's template decides them)"
    )
    if first.job == second.job:
        whom = (
            f"its measurements {first.source_measurement!r} and "
            f"{second.source_measurement!r} both write"
        )
    else:
        whom = f"it and [jobs.{first.job}] both write"
    tiers = first.tier if first.tier == second.tier else f"{first.tier}/{second.tier}"
    return _Problem(
        _table_name("jobs", second.job),
        "into" if first.job == second.job else "dest",
        job.into if first.job == second.job else job.dest,
        f"{whom} {what} of measurement {first.measurement!r} in tier {tiers} for the same "
        "series, so one replaces the other's points where their timestamps meet; set "
        "'into' on one of them (e.g. into = \"{{ measurement }}_1h\") or give them tag filters "
        "that cannot both match",
    )


def _archive_location(url: str) -> str:
    # Relative paths are relative to the one config file, so comparing them as written is exact.
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    return posixpath.normpath(url) if "://" not in url else url.rstrip("/")


def _windows_can_coincide(first: JobConfig, second: JobConfig) -> bool:
    # Interval windows are epoch-aligned: two of them are the same window only if the periods
    # are equal. A cron schedule is not analysed: assume it may produce the other's windows.
    if first.every is not None and second.every is not None:
        return first.every == second.every
    return True


def _shared_measurements(a: ArchiveJob, b: ArchiveJob) -> list[str]:
    """The measurements both archive: a pattern takes the other job's listed names it matches,
    and two patterns may always meet (what they match is known only per window)."""
    pa, pb = a.pattern, b.pattern
    if pa is not None and pb is not None:
        return [f"matching both {pa.text} and {pb.text}"]
    if pa is not None:
        return pa.select(list(b.measurements))
    if pb is not None:
        return pb.select(list(a.measurements))
    return sorted(set(a.measurements) & set(b.measurements))


def _archive_problems(
    tiers: Mapping[str, TierConfig], jobs: Mapping[str, JobConfig]
) -> list[_Problem]:
    archives = [
        (name, job, _archive_location(url))
        for name, job in jobs.items()
        if isinstance(job, ArchiveJob)
        and job.dest in tiers
        and (url := tiers[job.dest].archive) is not None
    ]
    problems: list[_Problem] = []
    for (a_name, a, a_place), (b_name, b, b_place) in combinations(archives, 2):
        shared = _shared_measurements(a, b)
        if a_place != b_place or not shared:
            continue
        coincide = _windows_can_coincide(a, b)
        if not coincide and disjoint_tags(a.tags, b.tags):
            continue
        why = (
            "the cold tier keeps one file per measurement and window, so a window archived by "
            "one replaces the other's file for the same window (points lost)"
            if coincide
            else "their windows differ, so both archive the same points and every read of the "
            "cold tier (restore, archive query) sees them twice"
        )
        problems.append(
            _Problem(
                _table_name("jobs", b_name),
                "dest",
                b.dest,
                f"it and [jobs.{a_name}] both archive measurement(s) {', '.join(shared)} into "
                f"the same cold tier: {why}; give one of them its own cold tier",
            )
        )
    return problems
