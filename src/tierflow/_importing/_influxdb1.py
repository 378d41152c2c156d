"""`tierflow import influxdb1`: read a 1.x server's continuous queries, write the config that
does their work (see `_translate1` for what carries over and what is refused)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tierflow._errors import InvalidInputError
from tierflow._importing._server import Connection, reading
from tierflow._importing._toml import config_name, imported_config, job_texts
from tierflow._importing._translate1 import ImportedJob, Tier, translate_cq
from tierflow._windows import isoformat

__all__ = ["ContinuousQueryText", "import_influxdb1", "influxdb1_config"]

CONNECTION = "influxdb1"


@dataclass(frozen=True, slots=True)
class ContinuousQueryText:
    """A CQ as `SHOW CONTINUOUS QUERIES` lists it."""

    database: str
    name: str
    query: str


async def import_influxdb1(
    connection: Connection,
    *,
    database: str | None,
    start: datetime,
    templates: Path | None,
) -> str:
    """The config (TOML text) doing the work of the CQs on `connection`'s server (of `database`
    only, when given); query jobs' templates are written into `templates`."""
    async with reading(connection, CONNECTION) as engine:
        names = [row[0] for s in await engine.query("SHOW DATABASES") for row in s.values]
        if database is not None and database not in names:
            raise InvalidInputError(
                f"{connection.url}: database {database!r} not found "
                f"(the server has: {', '.join(names) or 'none'})"
            )
        listed = await engine.query("SHOW CONTINUOUS QUERIES")
    cqs = [
        ContinuousQueryText(series.name, str(row[0]), str(row[1]))
        for series in listed
        for row in series.values
        if database is None or series.name == database
    ]
    return influxdb1_config(connection, cqs, start=start, templates=templates)


def influxdb1_config(
    connection: Connection,
    cqs: list[ContinuousQueryText],
    *,
    start: datetime,
    templates: Path | None,
) -> str:
    """The config text for `cqs` (pure but for writing the query jobs' templates)."""
    translated = [translate_cq(cq.database, cq.name, cq.query, start) for cq in cqs]
    tier_names = _tier_names(translated)
    jobs, files = job_texts(
        ((job, job.cq_name, _about(job)) for job in translated),
        tier_names,
        ".influxql.j2",
        templates,
    )
    header = [
        f"tierflow config imported from the continuous queries of {connection.url}"
        f" ({len(cqs)} found).",
        "Each job does the work of one CQ. Once tierflow runs it, drop the CQ",
        "(DROP CONTINUOUS QUERY <name> ON <database>): both would write the same points.",
        f"start: {isoformat(start)}; windows before it were the CQ's to compute. An earlier",
        "start recomputes them (the same points, overwritten).",
    ]
    if not cqs:
        header.append("No continuous queries found: nothing to import.")
    tiers = {name: tier.bucket for tier, name in tier_names.items()}
    return imported_config(connection, CONNECTION, header, tiers, jobs, files)


def _tier_names(jobs: list[ImportedJob]) -> dict[Tier, str]:
    tiers = sorted(
        {t for job in jobs for t in (job.source, job.dest) if t is not None},
        key=lambda t: (t.database, t.policy or ""),
    )
    taken: set[str] = set()
    return {t: config_name(f"{t.database}_{t.policy or 'default'}", taken) for t in tiers}


def _about(job: ImportedJob) -> list[str]:
    return [f"CQ {job.cq_name} ON {job.database}:", "  " + job.cq_text]
