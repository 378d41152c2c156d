"""The cold tier's archive: Parquet files of InfluxDB points over an object store.

    archive = open_archive("s3://bucket/tierflow")          # or a path, or file:///path
    manifest = archive.write_window("cpu", window, batches)  # batches: Iterable[PointBatch]
    for batch in archive.read(start, stop, measurement="cpu"):
        ...                                                   # batch.points.data: Arrow
    problems = archive.verify()                               # [] when sound
    result = archive.query('SELECT host, count(*) FROM "cpu" GROUP BY host')

S3 support (s3fs) and SQL (DuckDB) are optional extras, imported only when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tierflow._archive._archive import ArchivedBatch, ParquetArchive
from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._local import LocalObjectStore
from tierflow._archive._manifest import ArchivedFile, WindowManifest, partition_date
from tierflow._archive._query import QueryResult
from tierflow._archive._s3 import S3ObjectStore
from tierflow._archive._schema import Column, FieldType, Point, PointBatch, TypeConflict, widen
from tierflow._archive._store import ObjectInfo, ObjectStore
from tierflow._archive._verify import ProblemKind, VerifyProblem
from tierflow._errors import ConfigError

__all__ = [
    "ArchiveError",
    "ArchivedBatch",
    "ArchivedFile",
    "Column",
    "FieldType",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ParquetArchive",
    "Point",
    "PointBatch",
    "ProblemKind",
    "QueryResult",
    "S3ObjectStore",
    "TypeConflict",
    "VerifyProblem",
    "WindowManifest",
    "open_archive",
    "open_object_store",
    "partition_date",
    "widen",
]


def open_object_store(url: str, *, storage_options: Mapping[str, Any] | None = None) -> ObjectStore:
    """The store a URL names: `s3://bucket[/prefix]`, `file:///absolute/path`, or a plain path.
    `storage_options` (s3 only) go to s3fs: `endpoint_url`, `key`, `secret`, `client_kwargs`…"""
    if url.startswith("s3://"):
        try:
            return S3ObjectStore(url, storage_options=storage_options)
        except ArchiveError as exc:
            raise ConfigError(f"archive url {url!r}: {exc}") from exc
    if storage_options:
        raise ConfigError(f"archive url {url!r}: storage options apply to s3:// urls only")
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            raise ConfigError(f"archive url {url!r}: use file:///absolute/path")
        return LocalObjectStore(Path(unquote(parts.path)), url=url)
    if not url or "://" in url:
        raise ConfigError(
            f"archive url {url!r} is not supported; use a path, file:///path or s3://bucket/prefix"
        )
    return LocalObjectStore(Path(url), url=url)


def open_archive(
    url: str, *, storage_options: Mapping[str, Any] | None = None, **options: Any
) -> ParquetArchive:
    """A `ParquetArchive` over the store `url` names; `options` go to `ParquetArchive`."""
    return ParquetArchive(open_object_store(url, storage_options=storage_options), **options)
