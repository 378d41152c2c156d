"""Points in columns, their InfluxDB types, and how a window's columns are named.

InfluxDB types a field per shard, so one field can come back as an integer from one shard and a
float (or a string) from another within one window. Nothing is widened: a window file keeps one
column per type such a field had (`x::integer`, `x::float`), and each value is restored with its
own type. A tag and a field may share a name (`m,x=a x=1.5`); the field's column is then
`x::field`. Each column's Parquet metadata records what it is (`tierflow.kind`: tag or field) and
its InfluxDB name (`tierflow.key`), so a reader never has to parse column names; the manifest
records the same. Tags are always strings, stored dictionary-encoded.
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
    "Column",
    "FieldType",
    "Point",
    "PointBatch",
    "TypeConflict",
    "column_names",
    "widen",
]

TIME = "time"
TIME_TYPE = pa.timestamp("ns", tz="UTC")
TAG_TYPE = pa.dictionary(pa.int32(), pa.string())
KIND_KEY = b"tierflow.kind"
KEY_KEY = b"tierflow.key"
TAG = "tag"
FIELD = "field"


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
    """The one type a field takes when its values come as `first` and as `second`: used only
    to infer a type for `PointBatch.from_points`; the archive never widens a stored value."""
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
    Column names are unique; `keys` maps a column to its InfluxDB key where the two differ, so
    two columns may carry one key (a tag and a field called `x`, or a field in two types; a
    point has a value in at most one of a field's columns).
    """

    data: pa.RecordBatch
    tags: frozenset[str] = frozenset()
    keys: Mapping[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> tuple[str, ...]:
        """The field columns, in the batch's order."""
        return tuple(n for n in self.data.schema.names if n != TIME and n not in self.tags)

    def key(self, column: str) -> str:
        """The InfluxDB tag or field key of a column: its name unless `keys` says otherwise
        (a field named like a tag, one column per type of a field)."""
        return self.keys.get(column, column)

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
    """A field that came as several types within one window. Archives since format 2 keep one
    column per type (`stored_as` None); format 1 widened them to `stored_as`."""

    field: str
    types: tuple[FieldType, ...]
    stored_as: FieldType | None = None


@dataclass(frozen=True, slots=True)
class Column:
    """What a column of a window file holds: a tag (`type` None) or one type of a field."""

    kind: str
    key: str
    type: FieldType | None = None


_TYPE_ORDER = {kind: index for index, kind in enumerate(FieldType)}


def _sort_key(column: Column) -> tuple[int, str, int]:
    kind_rank = 0 if column.kind == TAG else 1
    return kind_rank, column.key, -1 if column.type is None else _TYPE_ORDER[column.type]


def column_names(columns: Iterable[Column]) -> dict[Column, str]:
    """A unique column name for each column, in file order (tags by key, then fields by key and
    type): a tag is named by its key; a field by its key, `key::field` where a tag (or `time`)
    has that name, `key::<type>` for each type of a field with several. A name already taken
    gets `#2`, `#3`, … (a tag literally called `x::field`)."""
    ordered = sorted(set(columns), key=_sort_key)
    tags = {column.key for column in ordered if column.kind == TAG}
    types: dict[str, int] = {}
    for column in ordered:
        if column.kind == FIELD:
            types[column.key] = types.get(column.key, 0) + 1
    taken = {TIME}
    names: dict[Column, str] = {}
    for column in ordered:
        if column.kind == TAG:
            wanted = column.key if column.key != TIME else f"{TIME}::tag"
        elif types[column.key] > 1:
            wanted = f"{column.key}::{column.type}"
        elif column.key in tags or column.key == TIME:
            wanted = f"{column.key}::field"
        else:
            wanted = column.key
        name, number = wanted, 1
        while name in taken:
            number += 1
            name = f"{wanted}#{number}"
        taken.add(name)
        names[column] = name
    return names
