"""SQL over the archive with DuckDB (the optional `archive-query` extra, imported only here).

Views are defined over the files the manifests name, never a glob, so a file no manifest commits
(an orphan of a crashed run) is never counted:

- `points`: every file of every measurement, with the hive columns `measurement` (text) and
  `date` (the date of the window's start) and the union of all columns;
- one view per measurement, named exactly as the measurement (quote it: `"cpu load"`), unless
  the name is `points` or differs from an earlier one only in case (DuckDB's names ignore case);
  such a measurement is still in `points`.

Columns are matched by name across files; a field stored as different types in different windows
is widened by DuckDB (integer and float to DOUBLE, anything and text to VARCHAR). `time` is a
TIMESTAMP WITH TIME ZONE in nanoseconds. A tag or field named `measurement` or `date` is hidden
by the hive column of that name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tierflow._archive._errors import ArchiveError
from tierflow._archive._s3 import S3ObjectStore

if TYPE_CHECKING:
    from tierflow._archive._archive import ParquetArchive

__all__ = ["QueryResult", "run_query"]

_EMPTY = (
    "SELECT NULL::TIMESTAMPTZ AS time, NULL::VARCHAR AS measurement, NULL::DATE AS date LIMIT 0"
)


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
    for manifest in archive.manifests():
        uris = by_measurement.setdefault(manifest.measurement, [])
        uris.extend(archive.store.uri(file.path) for file in manifest.files)
    connection = duckdb.connect(":memory:")
    try:
        if isinstance(archive.store, S3ObjectStore):
            connection.register_filesystem(archive.store.filesystem)
        every = [uri for uris in by_measurement.values() for uri in uris]
        connection.execute(f"CREATE VIEW points AS {_scan(every) if every else _EMPTY}")
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


def _scan(uris: Sequence[str]) -> str:
    files = ", ".join(_literal(uri) for uri in uris)
    return (
        f"SELECT * FROM read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
        "hive_types = {'measurement': 'VARCHAR', 'date': 'DATE'})"
    )


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
