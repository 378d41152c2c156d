"""`validate --online` for 1.x, after `/ping`: every tier's database and retention policy
(`SHOW RETENTION POLICIES`), and the source fields' types."""

from __future__ import annotations

from tierflow._config import Config
from tierflow._engines._base import MISSING_TARGET_FIX, Engine
from tierflow._engines.influxql._literals import influxql_ident
from tierflow._errors import EngineError
from tierflow._validation import Problem, check_fields, tiers_on

__all__ = ["check_influxdb1"]


async def check_influxdb1(
    engine: Engine, config: Config, name: str, problems: list[Problem]
) -> None:
    for tier_name, _ in tiers_on(config, name):
        tier = config.tiers[tier_name]
        try:
            series = await engine.query(
                f"SHOW RETENTION POLICIES ON {influxql_ident(tier.database)}"
            )
        except EngineError as exc:
            if exc.transient:
                raise
            problems.append(Problem(f"tier {tier_name}: {exc}", connection=name))
            continue
        policies = {str(row[0]) for s in series for row in s.values}
        if tier.retention_policy is not None and tier.retention_policy not in policies:
            problems.append(
                Problem(
                    f"tier {tier_name}: database {tier.database!r} has no retention policy "
                    f"{tier.retention_policy!r} (it has: {', '.join(sorted(policies))}; "
                    f"{MISSING_TARGET_FIX})",
                    connection=name,
                )
            )
    if not problems:  # a missing database or policy would be reported again per field
        problems += await check_fields(config, name, engine)
