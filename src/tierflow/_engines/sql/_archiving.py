"""Archive jobs from 3.x tiers: one measurement's window staged and checked (owned by the
transfers work of issue #15; a placeholder until it lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflow._archive._archive import StagedWindow
    from tierflow._engines._base import Engine
    from tierflow._engines._dialect import WindowExport

__all__ = ["stage_sql"]


async def stage_sql(engine: Engine, export: WindowExport) -> StagedWindow:
    """Export one measurement's window of a 3.x tier into the archive's staging area."""
    raise NotImplementedError("archive jobs from InfluxDB 3 tiers are not built yet")
