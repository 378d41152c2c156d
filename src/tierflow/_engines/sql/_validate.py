"""`validate --online` for 3.x, after `/health`: every tier's database exists; every job's
statements are planned by the server (`EXPLAIN`, which resolves every table and column
without running anything); each downsample's source fields exist with types its aggregates
take (`information_schema.columns`)."""

from __future__ import annotations

from tierflow._config import Config, DownsampleJob
from tierflow._engines._base import MISSING_TARGET_FIX, Engine, bare
from tierflow._engines.sql._dialect import DIALECT
from tierflow._engines.sql._downsample import (
    BUILTIN_DOWNSAMPLE,
    FIELD_TYPES,
    split_statements,
    table_columns,
    tag_columns,
)
from tierflow._engines.sql._engine import InfluxDB3Engine
from tierflow._errors import EngineError, TemplateError
from tierflow._jobs import render_job
from tierflow._validation import Problem, sample_batch, tiers_on

__all__ = ["check_influxdb3"]


async def check_influxdb3(
    engine: Engine, config: Config, name: str, problems: list[Problem]
) -> None:
    sql = bare(engine, InfluxDB3Engine)
    databases = {str(d.get("iox::database")) for d in await sql.databases()}
    missing = False
    for tier, database in tiers_on(config, name):
        if database not in databases:
            missing = True
            problems.append(
                Problem(
                    f"tier {tier}: database {database!r} does not exist ({MISSING_TARGET_FIX})",
                    connection=name,
                )
            )
    if missing:
        return  # every statement on it would be reported again
    for job, spec in config.jobs.items():
        if config.tiers[spec.source].connection != name:
            continue
        try:
            query = render_job(config, job, sample_batch(config, job))
            statements = split_statements(
                query.text, every_tag=query.template == BUILTIN_DOWNSAMPLE
            )
        except (TemplateError, ValueError):
            continue  # reported offline
        for statement in statements:
            database = statement.source_database or config.tiers[spec.source].database
            columns = await table_columns(sql, database, statement.source_table)
            if not columns:
                problems.append(
                    Problem(
                        f"table {statement.source_table!r} has no data in database "
                        f"{database!r} yet (or its name is misspelt): its columns cannot be "
                        "checked",
                        job=job,
                        connection=name,
                        warning=True,
                    )
                )
                continue
            if isinstance(spec, DownsampleJob):
                problems += _field_problems(job, spec, statement.source_table, columns, name)
            tags = []
            if statement.tag_places is not None:
                tags = await tag_columns(sql, database, statement.source_table)
            sent = statement.with_tags(tags, columns)
            try:
                await sql.query(f"EXPLAIN {sent}", database=database)
            except EngineError as exc:
                if exc.transient:
                    raise
                problems.append(
                    Problem(str(exc), job=job, template=query.template, connection=name)
                )


def _field_problems(
    job: str, spec: DownsampleJob, table: str, columns: dict[str, str], connection: str
) -> list[Problem]:
    problems = []
    for field, functions in spec.aggregates.items():
        kind = columns.get(field)
        if kind is None or kind.startswith("Dictionary") or field == "time":
            problems.append(
                Problem(f"table {table!r} has no field {field!r}", job=job, connection=connection)
            )
            continue
        found = FIELD_TYPES.get(kind, kind)
        refused = [f for f in functions if found not in DIALECT.accepted_types.get(f, ())]
        if refused:
            problems.append(
                Problem(
                    f"table {table!r} field {field!r} is {found}: "
                    f"{', '.join(refused)} cannot aggregate it",
                    job=job,
                    connection=connection,
                )
            )
    return problems
