"""Where things live in an archive, and the manifest that says what a window holds.

Layout, relative to the archive's root::

    measurement=<m>/date=<YYYY-MM-DD>/<start>_<stop>-<sha256[:16]>.parquet
    _manifests/measurement=<m>/<start>_<stop>.json

`<m>` is the measurement name percent-encoded (hive style, so DuckDB decodes it back), `<start>`
and `<stop>` the window's bounds as `20261101T000000Z`. A window's file sits under the date of
the window's **start**, even when the window runs past midnight: one window, one file, one
place; the `date` partition is therefore a pruning hint, and `time` the truth.

The manifest of a window is the commit point. The data file is written first, under a name
carrying its checksum, so it never overwrites the file the current manifest names; then the
manifest is replaced (one atomic put); then files of earlier runs of the window are removed. A
crash at any step leaves the previous manifest naming complete files, and at worst an orphan
that the window's next run removes. An empty window has a manifest with no file, so "archived
and empty" differs from "not archived".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, unquote

from tierflow._archive._errors import ArchiveError
from tierflow._archive._schema import TAG, Column, FieldType, TypeConflict
from tierflow._windows import Window, ensure_utc, isoformat

__all__ = [
    "MANIFESTS",
    "ArchivedFile",
    "WindowManifest",
    "data_key",
    "data_prefix",
    "manifest_key",
    "manifest_prefix",
    "parse_manifest_key",
]

MANIFESTS = "_manifests/"
# Format 2 keeps a field's types in columns of their own and describes every column; format 1
# (read, never written) widened them.
FORMAT = "tierflow-archive/2"
_READABLE = frozenset({"tierflow-archive/1", FORMAT})
_STAMP = "%Y%m%dT%H%M%S"


def _stamp(moment: datetime) -> str:
    moment = ensure_utc(moment)
    text = moment.strftime(_STAMP)
    return f"{text}.{moment.microsecond:06d}Z" if moment.microsecond else f"{text}Z"


def _parse_stamp(text: str) -> datetime:
    pattern = f"{_STAMP}.%fZ" if "." in text else f"{_STAMP}Z"
    return datetime.strptime(text, pattern).replace(tzinfo=UTC)


def _partition(measurement: str) -> str:
    if not measurement:
        raise ArchiveError("a measurement name cannot be empty")
    return f"measurement={quote(measurement, safe='')}/"


def _window_name(window: Window) -> str:
    return f"{_stamp(window.start)}_{_stamp(window.stop)}"


def partition_date(window: Window) -> date:
    """The `date=` partition of a window: the UTC date of its start."""
    return ensure_utc(window.start).date()


def data_prefix(measurement: str, window: Window) -> str:
    """The prefix every data file of this window (of any run) has."""
    day = partition_date(window).isoformat()
    return f"{_partition(measurement)}date={day}/{_window_name(window)}-"


def data_key(measurement: str, window: Window, sha256: str) -> str:
    return f"{data_prefix(measurement, window)}{sha256[:16]}.parquet"


def manifest_prefix(measurement: str | None = None) -> str:
    return MANIFESTS if measurement is None else f"{MANIFESTS}{_partition(measurement)}"


def manifest_key(measurement: str, window: Window) -> str:
    return f"{manifest_prefix(measurement)}{_window_name(window)}.json"


def parse_manifest_key(key: str) -> tuple[str, Window] | None:
    """The measurement and window a manifest key names; None for a key of another shape."""
    partition, _, name = key.removeprefix(MANIFESTS).partition("/")
    start, _, stop = name.removesuffix(".json").partition("_")
    if not partition.startswith("measurement=") or not name.endswith(".json") or "/" in name:
        return None
    try:
        return unquote(partition.removeprefix("measurement=")), Window(
            _parse_stamp(start), _parse_stamp(stop)
        )
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One committed Parquet file, as its window's manifest records it. Times are nanoseconds
    since the Unix epoch; `path` is the object key relative to the archive's root."""

    path: str
    measurement: str
    window: Window
    rows: int
    min_time_ns: int
    max_time_ns: int
    size: int
    sha256: str
    tierflow_version: str


@dataclass(frozen=True, slots=True)
class WindowManifest:
    """What one window of one measurement holds in the archive: its files (none when the window
    was empty), its schema (tag names; field names with their one type; the fields that came in
    several types, each type in a column of its own) and what each file column holds."""

    measurement: str
    window: Window
    files: tuple[ArchivedFile, ...]
    tags: tuple[str, ...]
    fields: Mapping[str, FieldType]
    conflicts: tuple[TypeConflict, ...]
    tierflow_version: str
    written_at: datetime
    key: str = field(default="", compare=False)
    columns: Mapping[str, Column] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(file.rows for file in self.files)

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "measurement": self.measurement,
            "window": {"start": isoformat(self.window.start), "stop": isoformat(self.window.stop)},
            "tierflow_version": self.tierflow_version,
            "written_at": isoformat(self.written_at),
            "tags": list(self.tags),
            "fields": {name: str(kind) for name, kind in self.fields.items()},
            "conflicts": [
                {"field": conflict.field, "types": [str(kind) for kind in conflict.types]}
                | ({"stored_as": str(conflict.stored_as)} if conflict.stored_as else {})
                for conflict in self.conflicts
            ],
            "columns": {
                name: {"kind": column.kind, "key": column.key}
                | ({"type": str(column.type)} if column.type else {})
                for name, column in self.columns.items()
            },
            "files": [
                {
                    "path": f.path,
                    "rows": f.rows,
                    "min_time_ns": f.min_time_ns,
                    "max_time_ns": f.max_time_ns,
                    "bytes": f.size,
                    "sha256": f.sha256,
                }
                for f in self.files
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, key: str = "") -> WindowManifest:
        """Parse a manifest; ArchiveError (naming `key`) if it is not one this version reads."""
        try:
            document = json.loads(data)
            if document.get("format") not in _READABLE:
                raise ValueError(f"unknown format {document.get('format')!r}")
            return cls._from_document(document, key)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArchiveError(f"manifest {key or '?'} is unreadable: {exc}") from exc

    @classmethod
    def _from_document(cls, document: dict[str, Any], key: str) -> WindowManifest:
        measurement = str(document["measurement"])
        window = Window(
            _parse_iso(document["window"]["start"]), _parse_iso(document["window"]["stop"])
        )
        version = str(document["tierflow_version"])
        files = tuple(
            ArchivedFile(
                path=str(entry["path"]),
                measurement=measurement,
                window=window,
                rows=int(entry["rows"]),
                min_time_ns=int(entry["min_time_ns"]),
                max_time_ns=int(entry["max_time_ns"]),
                size=int(entry["bytes"]),
                sha256=str(entry["sha256"]),
                tierflow_version=version,
            )
            for entry in document["files"]
        )
        conflicts = tuple(
            TypeConflict(
                str(entry["field"]),
                tuple(FieldType(t) for t in entry["types"]),
                FieldType(entry["stored_as"]) if entry.get("stored_as") else None,
            )
            for entry in document["conflicts"]
        )
        columns = {
            str(name): Column(
                str(entry["kind"]),
                str(entry["key"]),
                None if entry["kind"] == TAG else FieldType(entry["type"]),
            )
            for name, entry in document.get("columns", {}).items()
        }
        return cls(
            measurement=measurement,
            window=window,
            files=files,
            tags=tuple(str(tag) for tag in document["tags"]),
            fields={str(name): FieldType(kind) for name, kind in document["fields"].items()},
            conflicts=conflicts,
            tierflow_version=version,
            written_at=_parse_iso(document["written_at"]),
            key=key,
            columns=columns,
        )


def _parse_iso(text: str) -> datetime:
    return ensure_utc(datetime.fromisoformat(text))
