"""The measurements of one 2.x bucket with data in a window (what a measurement pattern is
matched against): the distinct `_measurement` of the points in `[start, stop)`, read the way
`schema.measurements` reads them (`keep |> group |> distinct`, which storage answers from its
index as a tag-values read) but bounded at both ends on every 2.x version (`schema`'s `stop`
parameter is not in the older ones)."""

from __future__ import annotations

from collections.abc import Mapping

from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines.flux._literals import flux_string, flux_time
from tierflow._windows import Window

__all__ = ["list_measurements", "measurements_script"]


def measurements_script(tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
    """One row per measurement of `tier` with a point (matching `tags`) in `window`."""
    script = (
        f"from(bucket: {flux_string(tier.bucket)})\n"
        f"  |> range(start: {flux_time(window.start)}, stop: {flux_time(window.stop)})\n"
    )
    if tags:
        predicate = " and ".join(
            f"r[{flux_string(k)}] == {flux_string(v)}" for k, v in sorted(tags.items())
        )
        script += f"  |> filter(fn: (r) => {predicate})\n"
    return (
        script
        + '  |> keep(columns: ["_measurement"])\n'
        + "  |> group()\n"
        + '  |> distinct(column: "_measurement")\n'
    )


async def list_measurements(
    engine: Engine, tier: TierConfig, window: Window, tags: Mapping[str, str]
) -> list[str]:
    names: set[str] = set()
    for series in await engine.query(measurements_script(tier, window, tags)):
        if "_value" in series.columns:
            at = series.columns.index("_value")
            names.update(str(row[at]) for row in series.values if row[at] is not None)
    return sorted(names)
