"""Relays from 3.x tiers and field types (owned by the transfers work of issue #15;
placeholders until it lands)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflow._archive import FieldType, PointBatch
    from tierflow._config import TierConfig
    from tierflow._engines._base import Engine
    from tierflow._engines._dialect import AggregateRead

__all__ = ["sql_aggregate_batches", "sql_field_types"]


def sql_aggregate_batches(engine: Engine, read: AggregateRead) -> AsyncIterator[PointBatch]:
    """A relay's aggregating read of a 3.x tier as typed batches."""
    raise NotImplementedError("relays from InfluxDB 3 tiers are not built yet")


async def sql_field_types(
    engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
) -> dict[str, frozenset[FieldType]]:
    """Every type each field of `measurement` has in a 3.x tier (one: 3.x fixes a field's
    type at its first write)."""
    raise NotImplementedError("field types of InfluxDB 3 tables are not built yet")
