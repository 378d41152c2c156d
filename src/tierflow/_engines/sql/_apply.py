"""`tierflow apply` on InfluxDB 3: databases (skeleton; filled in by the next commits)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tierflow._engines._dialect import TierAdmin

if TYPE_CHECKING:
    from tierflow._apply._model import Change, Expiring, Group, Observed, Place, ServerStep
    from tierflow._engines._base import Engine

__all__ = ["ADMIN"]


class _Databases(TierAdmin):
    async def observe_group(self, engine: Engine, group: Group, observed: Observed) -> None:
        raise NotImplementedError("tierflow apply on InfluxDB 3 is not built yet")

    def plan_group(
        self, group: Group, observed: Observed, problems: list[str]
    ) -> dict[str, Change]:
        raise NotImplementedError("tierflow apply on InfluxDB 3 is not built yet")

    async def apply_step(self, engine: Engine, step: ServerStep) -> None:
        raise NotImplementedError("tierflow apply on InfluxDB 3 is not built yet")

    async def expiring(self, engine: Engine, place: Place, cutoff: datetime) -> Expiring:
        raise NotImplementedError("tierflow apply on InfluxDB 3 is not built yet")


ADMIN = _Databases()
