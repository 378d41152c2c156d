"""SQL over the archive with DuckDB (the optional `archive-query` extra, imported only here).

Views are defined over the files the manifests name, never a glob, so a file no manifest commits
(an orphan of a crashed run) is never counted. Hive partitioning is off: a view's columns are
exactly the files' columns (`time`, tags, fields), each under its own name.

- one view per measurement, named exactly as the measurement (quote it: `"cpu load"`), unless
  the name is `points` or differs from an earlier one only in case (DuckDB's names ignore case);
  such a measurement is still in `points`;
- `points`: every file of every measurement, the union of their columns, and a column
  `measurement` (text) naming each row's measurement. A measurement's own tag or field named
  `measurement` is not hidden by it: in `points` it is the column `measurement::tag` or
  `measurement::field` (its kind as the window's manifest records it).

Columns are matched by name across files; a field stored as different types in different windows
is widened by DuckDB (integer and float to DOUBLE, anything and text to VARCHAR). `time` is a
TIMESTAMP WITH TIME ZONE in nanoseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tierflow._archive._errors import ArchiveError
from tierflow._archive._s3 import S3ObjectStore

if TYPE_CHECKING:
    from tierflow._archive._archive import ParquetArchive
    from tierflow._archive._manifest import WindowManifest

__all__ = ["QueryResult", "run_query"]

_EMPTY = "SELECT NULL::TIMESTAMPTZ AS time, NULL::VARCHAR AS measurement LIMIT 0"
_MEASUREMENT = "measurement"


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A query's column names and rows."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def run_query(archive: ParquetArchive, sql: str) -> QueryResult:
    try:
        import duckdb
    except ImportError as exc:
        raise ArchiveError(
            "querying the archive needs DuckDB: pip install 'tierflow[archive-query]'"
        ) from exc
    by_measurement: dict[str, list[str]] = {}
    # In `points`, the files of a measurement, by the kind of their own `measurement` column.
    by_kind: dict[tuple[str, str | None], list[str]] = {}
    for manifest in archive.manifests():
        uris = [archive.store.uri(file.path) for file in manifest.files]
        by_measurement.setdefault(manifest.measurement, []).extend(uris)
        by_kind.setdefault((manifest.measurement, _kind_of_measurement(manifest)), []).extend(uris)
    connection = duckdb.connect(":memory:")
    try:
        if isinstance(archive.store, S3ObjectStore):
            connection.register_filesystem(archive.store.filesystem)
        parts = [_labelled(name, kind, uris) for (name, kind), uris in by_kind.items() if uris]
        connection.execute(f"CREATE VIEW points AS {' UNION ALL BY NAME '.join(parts) or _EMPTY}")
        taken = {"points"}
        for measurement, uris in by_measurement.items():
            # DuckDB's names are case-insensitive: of `CPU` and `cpu`, the first gets a view.
            if uris and measurement.lower() not in taken:
                taken.add(measurement.lower())
                connection.execute(f"CREATE VIEW {_identifier(measurement)} AS {_scan(uris)}")
        cursor = connection.execute(sql)
        columns = tuple(column[0] for column in cursor.description or ())
        return QueryResult(columns, cursor.fetchall())
    except duckdb.Error as exc:
        raise ArchiveError(f"archive query failed: {exc}") from exc
    finally:
        connection.close()


def _kind_of_measurement(manifest: WindowManifest) -> str | None:
    """`tag` or `field` if the window has a column named `measurement`, else None."""
    if manifest.columns:  # format 2 describes each column
        column = manifest.columns.get(_MEASUREMENT)
        return None if column is None else column.kind
    if _MEASUREMENT in manifest.tags:
        return "tag"
    if _MEASUREMENT in manifest.fields:
        return "field"
    return None


def _labelled(measurement: str, kind: str | None, uris: Sequence[str]) -> str:
    """The files of one measurement with the column `measurement` naming it; their own column
    of that name, if they have one, renamed `measurement::<kind>`."""
    label = f"{_literal(measurement)} AS {_MEASUREMENT}"
    if kind is None:
        return f"SELECT *, {label} FROM ({_scan(uris)})"
    own = _identifier(f"{_MEASUREMENT}::{kind}")
    return (
        f"SELECT * EXCLUDE ({_MEASUREMENT}), {_MEASUREMENT} AS {own}, {label} FROM ({_scan(uris)})"
    )


def _scan(uris: Sequence[str]) -> str:
    files = ", ".join(_literal(uri) for uri in uris)
    return f"SELECT * FROM read_parquet([{files}], hive_partitioning = false, union_by_name = true)"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
