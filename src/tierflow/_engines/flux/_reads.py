"""2.x reads that come back typed: each field's types, by the `#datatype` of the tables a
`first()` per series and field gives."""

from __future__ import annotations

from datetime import datetime

from tierflow._archive import FieldType
from tierflow._config import TierConfig
from tierflow._engines._base import Engine, bare
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.flux._export import _selection, annotated_batches
from tierflow._windows import EPOCH

__all__ = ["field_types_script", "flux_field_types"]


def field_types_script(*, bucket: str, measurement: str, stop: datetime) -> str:
    """A Flux script giving each field of `measurement` once per series and type (its first
    value, unpivoted: a field with two types across shards comes back as tables of each type),
    read through `annotated_batches`, which types each field by its table's `#datatype`.
    `first()` comes right after the filter so that storage answers it (a pushed-down bare
    aggregate) instead of streaming every point."""
    return (
        _selection(bucket, measurement, EPOCH, stop, {})
        + "  |> first()\n"
        + '  |> drop(columns: ["_start", "_stop", "_measurement"])\n'
    )


async def flux_field_types(
    engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
) -> dict[str, frozenset[FieldType]]:
    """Every type each field of `measurement` has in the tier (empty: no such measurement)."""
    found: dict[str, set[FieldType]] = {}
    script = field_types_script(bucket=tier.bucket, measurement=measurement, stop=now)
    async for batch in annotated_batches(bare(engine, FluxEngine).stream(script)):
        for name in batch.fields:
            kind = FieldType.of_arrow(batch.data.schema.field(name).type)
            if kind is not None:
                found.setdefault(batch.key(name), set()).add(kind)
    return {name: frozenset(types) for name, types in found.items()}
