"""What a downsample job asks of its source's fields: that they exist, and that each aggregate
applies to their type.

InfluxDB refuses a wrong type only when the query runs, in words that name no field (1.x:
`unsupported mean iterator type: *query.stringInterruptIterator`), and a misspelt field runs and
writes nothing. So `tierflow validate --online` reads the source's field types and reports both,
and `run-once` warns (`fields_missing`) about fields the source lacks.

Which types each aggregate takes, per dialect:

- InfluxQL, seen on influxd 1.6.7 (every aggregate on a float, integer, boolean and string field,
  with and without INTO): `count first last mode` take every type; `min max` numbers and
  booleans; `mean median spread stddev sum` numbers only. Unsigned fields cannot be written to
  1.6.7: they are taken as numbers, like integers.
- Flux, from its source (`stdlib/universe/max.go`, `min.go`: no boolean or string selector) and
  documentation: `count first last` take every type; `min max mean median spread stddev sum`
  numbers only. (`mode` is refused on 2.x by the config check.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from tierflow._archive import FieldType
from tierflow._config import DownsampleJob, TierConfig
from tierflow._engines import Engine, dialects
from tierflow._errors import EngineError, TemplateError
from tierflow._logging import log_event

__all__ = [
    "ACCEPTED_TYPES",
    "missing_fields",
    "source_field_types",
    "type_problems",
    "warn_missing_fields",
]

#: dialect → aggregate → the field types it accepts (see the module docstring for the sources;
#: each table lives in its dialect's package).
ACCEPTED_TYPES: Mapping[str, Mapping[str, frozenset[FieldType]]] = {
    dialect.name: {
        function: frozenset(FieldType(kind) for kind in kinds)
        for function, kinds in dialect.accepted_types.items()
    }
    for dialect in dialects()
}


async def source_field_types(
    engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
) -> dict[str, frozenset[FieldType]]:
    """Every type each field of `measurement` has in the tier (empty: no such measurement)."""
    return await engine.dialect.field_types(engine, tier, measurement, now=now)


def missing_fields(job: DownsampleJob, types: Mapping[str, frozenset[FieldType]]) -> list[str]:
    """The job's fields the source measurement does not have, sorted."""
    return sorted(set(job.aggregates) - set(types))


def type_problems(
    job: DownsampleJob,
    dialect: str,
    measurement: str,
    types: Mapping[str, frozenset[FieldType]],
) -> list[str]:
    """One sentence per field the source lacks and per aggregate its type does not take; a
    field with several types is reported if any of them is refused."""
    known = ", ".join(sorted(types)) or "none: no data, or a misspelt measurement"
    problems = [
        f"measurement {measurement!r} has no field {field!r} in the source "
        f"(its fields: {known}); aggregates {', '.join(job.aggregates[field])} would "
        "write nothing"
        for field in missing_fields(job, types)
    ]
    table = ACCEPTED_TYPES[dialect]
    for field, functions in job.aggregates.items():
        for function in functions:
            has = types.get(field, frozenset())
            refused = sorted(has - table[function])
            if refused:
                accepted = ", ".join(sorted(table[function]))
                problems.append(
                    f"measurement {measurement!r} field {field!r} is {' and '.join(sorted(has))} "
                    f"in the source: aggregate {function} does not apply to "
                    f"{' or '.join(refused)} fields ({dialect} {function} takes {accepted})"
                )
    return problems


async def warn_missing_fields(
    engine: Engine, job: str, spec: DownsampleJob, tier: TierConfig, *, now: datetime
) -> None:
    """Log `fields_missing` for each source measurement lacking fields the job aggregates:
    InfluxDB runs such a query and writes nothing for them, without a word. One field lookup
    per measurement; a lookup that fails is left to the windows, which fail and say why."""
    for measurement in spec.measurements:
        try:
            types = await source_field_types(engine, tier, measurement, now=now)
        except (EngineError, TemplateError):
            return
        if missing := missing_fields(spec, types):
            log_event(
                "fields_missing",
                level=logging.WARNING,
                job=job,
                tier=spec.source,
                measurement=measurement,
                fields=missing,
                known=sorted(types),
            )
