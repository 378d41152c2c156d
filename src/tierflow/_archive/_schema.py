"""Points in columns, their InfluxDB types, and the rule that settles type conflicts.

InfluxDB types a field per shard, so one field can come back as an integer from one shard and a
float (or a string) from another within one window. A Parquet file has one type per column, so
the archive settles each field on one type per window file:

- the same type twice stays that type;
- two different numeric types (integer, unsigned, float) become **float** (integers beyond
  2**53 lose precision, which is why the manifest records the conflict);
- anything with a string or a boolean (other than boolean twice) becomes **string** (`true`,
  `false`, `42`, `1.5`): the one type every value can be written as.

Tags are always strings, stored dictionary-encoded. A name may not be both a tag and a field in
one window, nor be `time`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

from tierflow._archive._errors import ArchiveError

__all__ = [
    "TAG_TYPE",
    "TIME",
    "TIME_TYPE",
    "FieldType",
    "Point",
    "PointBatch",
    "TypeConflict",
    "widen",
]

TIME = "time"
TIME_TYPE = pa.timestamp("ns", tz="UTC")
TAG_TYPE = pa.dictionary(pa.int32(), pa.string())
KIND_KEY = b"tierflow.kind"


class FieldType(StrEnum):
    """A field's type, named as InfluxDB's `SHOW FIELD KEYS` names it."""

    FLOAT = "float"
    INTEGER = "integer"
    UNSIGNED = "unsigned"
    BOOLEAN = "boolean"
    STRING = "string"

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self]

    @classmethod
    def of_arrow(cls, data_type: pa.DataType) -> FieldType | None:
        """The field type an Arrow column holds, or None for an all-null (`null`) column."""
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        if pa.types.is_null(data_type):
            return None
        for check, field_type in _ARROW_CHECKS:
            if check(data_type):
                return field_type
        raise ArchiveError(f"a field column of type {data_type} has no InfluxDB type")


_ARROW_TYPES = {
    FieldType.FLOAT: pa.float64(),
    FieldType.INTEGER: pa.int64(),
    FieldType.UNSIGNED: pa.uint64(),
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.STRING: pa.string(),
}
_ARROW_CHECKS = (
    (pa.types.is_floating, FieldType.FLOAT),
    (pa.types.is_signed_integer, FieldType.INTEGER),
    (pa.types.is_unsigned_integer, FieldType.UNSIGNED),
    (pa.types.is_boolean, FieldType.BOOLEAN),
    (pa.types.is_string, FieldType.STRING),
    (pa.types.is_large_string, FieldType.STRING),
)
_NUMERIC = frozenset({FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED})


def widen(first: FieldType, second: FieldType) -> FieldType:
    """The one type a field takes when its values come as `first` and as `second`."""
    if first == second:
        return first
    if first in _NUMERIC and second in _NUMERIC:
        return FieldType.FLOAT
    return FieldType.STRING


FieldValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Point:
    """One point, row-wise: time in nanoseconds since the Unix epoch (UTC), tags, fields."""

    time_ns: int
    tags: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PointBatch:
    """A chunk of one measurement's points, in columns.

    `data` holds a `time` column (int64 nanoseconds since the Unix epoch, or a time-zone-aware
    Arrow timestamp), one string column per tag named in `tags` (null where a point lacks the
    tag), and one column per field, typed as InfluxDB typed it: float64, int64, uint64, bool or
    string (narrower ints and floats are widened; null where a point lacks the field).
    """

    data: pa.RecordBatch
    tags: frozenset[str] = frozenset()

    @property
    def fields(self) -> tuple[str, ...]:
        """The field columns, in the batch's order."""
        return tuple(n for n in self.data.schema.names if n != TIME and n not in self.tags)

    @property
    def num_rows(self) -> int:
        return int(self.data.num_rows)

    @classmethod
    def from_points(
        cls, points: Iterable[Point], *, field_types: Mapping[str, FieldType] | None = None
    ) -> PointBatch:
        """Columns from rows. A field's type is taken from `field_types`, else from its values:
        bool → boolean, int → integer (unsigned if one exceeds 2**63 - 1), float → float,
        str → string, settled by `widen` when they disagree."""
        rows = list(points)
        times = [point.time_ns for point in rows]
        tag_names = sorted({name for point in rows for name in point.tags})
        field_names = sorted({name for point in rows for name in point.fields})
        columns: dict[str, pa.Array] = {TIME: pa.array(times, pa.int64())}
        for name in tag_names:
            columns[name] = pa.array([point.tags.get(name) for point in rows], pa.string())
        for name in field_names:
            values = [point.fields.get(name) for point in rows]
            given = (field_types or {}).get(name)
            field_type = given or _infer([value for value in values if value is not None])
            if field_type is None:
                continue
            converted = [None if value is None else _convert(value, field_type) for value in values]
            columns[name] = pa.array(converted, field_type.arrow_type)
        return cls(pa.RecordBatch.from_pydict(columns), frozenset(tag_names))


def _value_type(value: FieldValue) -> FieldType:
    if isinstance(value, bool):
        return FieldType.BOOLEAN
    if isinstance(value, int):
        return FieldType.UNSIGNED if value > 2**63 - 1 else FieldType.INTEGER
    if isinstance(value, float):
        return FieldType.FLOAT
    return FieldType.STRING


def _infer(values: list[FieldValue]) -> FieldType | None:
    result: FieldType | None = None
    for value in values:
        kind = _value_type(value)
        result = kind if result is None else widen(result, kind)
    return result


def _convert(value: FieldValue, field_type: FieldType) -> FieldValue:
    if field_type is FieldType.STRING and not isinstance(value, str):
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if field_type is FieldType.FLOAT:
        return float(value)
    return value


def cast_column(values: pa.Array, target: pa.DataType) -> pa.Array:
    """`values` as `target`, widening as `widen` allows (int → float may round)."""
    if values.type == target:
        return values
    if pa.types.is_dictionary(values.type) and not pa.types.is_dictionary(target):
        values = pc.cast(values, values.type.value_type)
    try:
        return pc.cast(values, target, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ArchiveError(f"cannot cast a {values.type} column to {target}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TypeConflict:
    """A field that came as several types within one window, and the type it was stored as."""

    field: str
    types: tuple[FieldType, ...]
    stored_as: FieldType
