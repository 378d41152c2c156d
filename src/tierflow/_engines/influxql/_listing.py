"""The measurements of one 1.x tier with data in a window (what a measurement pattern is
matched against).

`SHOW MEASUREMENTS` is per database, not per retention policy, and refuses a time range
("SHOW MEASUREMENTS doesn't support time in WHERE clause", seen on 1.6.7), so it would list a
measurement that has points only in another policy or another time. A read of the tier's own
policy over the window does not: `SELECT * FROM "db"."rp"./.*/ WHERE time … LIMIT 1` answers one
series per measurement with at least one point there (the limit applies per series: one row
each), and none for a measurement whose points lie in another policy or outside the window
(seen on 1.6.7, and tested in tests/integration/test_wildcards.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines.influxql._literals import influxql_ident, influxql_string, influxql_time
from tierflow._windows import Window

__all__ = ["list_measurements", "measurements_query"]


def measurements_query(tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
    """One row per measurement of `tier` with a point (matching `tags`) in `window`."""
    rp = influxql_ident(tier.retention_policy) if tier.retention_policy else ""
    where = [f"time >= {influxql_time(window.start)}", f"time < {influxql_time(window.stop)}"]
    where += [f"{influxql_ident(k)} = {influxql_string(v)}" for k, v in sorted(tags.items())]
    source = f"{influxql_ident(tier.database)}.{rp}./.*/"
    return f"SELECT * FROM {source} WHERE {' AND '.join(where)} LIMIT 1"


async def list_measurements(
    engine: Engine, tier: TierConfig, window: Window, tags: Mapping[str, str]
) -> list[str]:
    found = await engine.query(measurements_query(tier, window, tags), database=tier.database)
    return sorted({series.name for series in found if series.values})
