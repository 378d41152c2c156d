"""Each aggregate a 3.x downsample computes, as the SQL whose value and type are exactly what
InfluxQL's `SELECT … INTO` writes (checked window for window against real influxd in
`tests/integration/test_sql_downsample.py`):

- only a field's own values count: InfluxQL's aggregates see the points that have the field,
  so selectors skip rows where it is null (`FILTER (WHERE f IS NOT NULL)`);
- `count` of a bucket where the field is absent (others fill it) is not written by INTO: 0
  becomes null (`NULLIF`), and null cells are not written;
- `mean` is a float (InfluxQL sums floats; DataFusion's `avg` casts to Float64), `sum`, `min`,
  `max` and `spread` keep the field's type (int64, uint64, float64);
- `first`/`last` are the values at the earliest/latest time (a series holds one point per
  time, so there is no tie within a group);
- `median` is InfluxQL's rule written out: the middle value, or for an even count
  `a + (b - a) / 2` of the two middle ones, in float64; DataFusion's `median()` says
  `(a + b) / 2` (and on older versions, integer division for ints), which rounds differently;
- `stddev` and `mode` are refused (see `WHY_NOT`): no SQL says them exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierflow._errors import TemplateError
from tierflow._templates import QueryLiteral

__all__ = ["sql_aggregate"]


def _median(f: str) -> str:
    values = f"array_sort(array_agg({f}) FILTER (WHERE {f} IS NOT NULL))"
    n = f"cardinality({values})"
    low = f"array_element({values}, CAST(({n} + 1) / 2 AS BIGINT))"
    high = f"array_element({values}, CAST({n} / 2 + 1 AS BIGINT))"
    return (
        f"CASE WHEN {n} = 0 THEN NULL WHEN {n} % 2 = 1 THEN CAST({low} AS DOUBLE) "
        f"ELSE CAST({low} AS DOUBLE) + CAST({high} - {low} AS DOUBLE) / 2 END"
    )


_EXPRESSIONS: Mapping[str, Any] = {
    "count": lambda f: f"nullif(count({f}), 0)",
    "sum": lambda f: f"sum({f})",
    "mean": lambda f: f"avg({f})",
    "min": lambda f: f"min({f})",
    "max": lambda f: f"max({f})",
    "spread": lambda f: f"max({f}) - min({f})",
    "first": lambda f: f'first_value({f} ORDER BY "time") FILTER (WHERE {f} IS NOT NULL)',
    "last": lambda f: f'last_value({f} ORDER BY "time") FILTER (WHERE {f} IS NOT NULL)',
    "median": _median,
}


def sql_aggregate(aggregate: object) -> QueryLiteral:
    """The SQL of one of a downsample's aggregates (`{"function", "field"}` from the job)."""
    from tierflow._engines.sql._dialect import WHY_NOT
    from tierflow._engines.sql._literals import sql_ident

    if not isinstance(aggregate, Mapping):
        raise TemplateError("sql_aggregate needs an aggregate of the job")
    function = str(aggregate.get("function"))
    make = _EXPRESSIONS.get(function)
    if make is None:
        raise TemplateError(WHY_NOT.get(function, f"no SQL for aggregate {function!r}"))
    return QueryLiteral(make(str(sql_ident(aggregate.get("field")))))
