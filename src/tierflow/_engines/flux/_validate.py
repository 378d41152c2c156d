"""`validate --online` for 2.x, after `/health`: every tier's bucket inside the connection's
org, every Flux query through `POST /api/v2/query/analyze`, and the source fields' types."""

from __future__ import annotations

from tierflow._config import Config
from tierflow._engines._base import MISSING_TARGET_FIX, Engine, bare
from tierflow._engines.flux._engine import FluxEngine
from tierflow._errors import TemplateError
from tierflow._jobs import render_job
from tierflow._validation import Problem, check_fields, sample_batch, tiers_on

__all__ = ["check_influxdb2"]


async def check_influxdb2(
    engine: Engine, config: Config, name: str, problems: list[Problem]
) -> None:
    flux = bare(engine, FluxEngine)
    for tier, bucket in tiers_on(config, name):
        if not await flux.bucket_exists(bucket):
            problems.append(
                Problem(
                    f"tier {tier}: bucket {bucket!r} is not in org {flux.config.org!r} "
                    f"({MISSING_TARGET_FIX})",
                    connection=name,
                )
            )
    for job, spec in config.jobs.items():
        if config.tiers[spec.source].connection != name:
            continue
        try:
            query = render_job(config, job, sample_batch(config, job))
        except TemplateError:
            continue  # reported offline
        problems.extend(
            Problem(error, job=job, template=query.template, connection=name)
            for error in await flux.analyze(query.text)
        )
    problems += await check_fields(config, name, engine)
