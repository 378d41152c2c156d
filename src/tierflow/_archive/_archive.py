"""`ParquetArchive`: the cold tier, as Parquet files and manifests over an object store."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._manifest import (
    ArchivedFile,
    WindowManifest,
    data_key,
    data_prefix,
    legacy_data_prefix,
    legacy_manifest_key,
    legacy_manifest_prefix,
    manifest_key,
    manifest_prefix,
    parse_manifest_key,
)
from tierflow._archive._parquet import WindowFileWriter, WrittenFile, read_file
from tierflow._archive._schema import PointBatch
from tierflow._archive._store import ObjectStore
from tierflow._archive._verify import VerifyProblem, verify_archive
from tierflow._clock import Clock, utc_now
from tierflow._windows import Window, isoformat, to_micros

if TYPE_CHECKING:
    from tierflow._archive._query import QueryResult

__all__ = ["ArchivedBatch", "ParquetArchive", "StagedWindow"]

_T = TypeVar("_T")


def _ns(moment: datetime) -> int:
    return to_micros(moment) * 1_000


@dataclass(frozen=True, slots=True)
class StagedWindow:
    """A window written to a local file and not yet committed (`ParquetArchive.acommit`):
    `written` describes the file, None when the window held no point."""

    measurement: str
    window: Window
    written: WrittenFile | None
    scratch: _Scratch


@dataclass(frozen=True, slots=True)
class ArchivedBatch:
    """Points read back from the archive: which measurement and window file they come from, and
    the points, types as stored (an integer field stays int64)."""

    measurement: str
    window: Window
    path: str
    points: PointBatch


class ParquetArchive:
    """The cold tier: one Parquet file per (measurement, window) over an `ObjectStore`, and one
    JSON manifest per (measurement, window) that commits it. See `tierflow._archive._manifest`
    for the layout and the commit protocol, `tierflow._archive._parquet` for how a window is
    written in bounded memory, `tierflow._archive._schema` for the type rules.

    A window is written through a scratch directory on local disk (`staging_dir`, default the
    system temporary directory), which must hold one window's compressed file. Two writers must
    not write the same window at once; the state store's claim sees to that.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        staging_dir: Path | None = None,
        compression: str = "zstd",
        compression_level: int | None = None,
        row_group_rows: int = 131_072,
        read_batch_rows: int = 65_536,
        tierflow_version: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self._staging_dir = staging_dir
        self._compression = compression
        self._compression_level = compression_level
        self._row_group_rows = row_group_rows
        self._read_batch_rows = read_batch_rows
        self._version = tierflow_version
        self._clock = clock

    @property
    def tierflow_version(self) -> str:
        if self._version is None:
            # Imported late: tierflow/__init__ may import this package.
            from tierflow import __version__

            self._version = __version__
        return self._version

    # -- writing -----------------------------------------------------------------------------

    def write_window(
        self, measurement: str, window: Window, batches: Iterable[PointBatch]
    ) -> WindowManifest:
        """Archive one window of one measurement from `batches`, replacing what an earlier run of
        the window archived. The window's file and manifest appear complete or not at all: if
        `batches` raises, its error propagates and the archive is as it was."""
        with self._staging() as scratch:
            writer = self._writer(scratch, measurement, window)
            try:
                for batch in batches:
                    writer.add(batch)
                written = writer.finish()
            except BaseException:
                writer.abort()
                raise
            return self._commit(measurement, window, written)

    async def awrite_window(
        self, measurement: str, window: Window, batches: AsyncIterable[PointBatch]
    ) -> WindowManifest:
        """`write_window` for an async source; encoding, compression and uploads run in worker
        threads so the event loop stays free. If cancelled while committing, the commit still
        finishes (the window is then archived; a re-run replaces it)."""
        staged = await self.astage_window(measurement, window, batches)
        try:
            return await self.acommit(staged)
        finally:
            self.discard(staged)

    async def astage_window(
        self, measurement: str, window: Window, batches: AsyncIterable[PointBatch]
    ) -> StagedWindow:
        """Write one window of one measurement to a local file, not yet visible in the archive:
        `acommit` makes it the window's archive, `discard` drops it. A caller checks the staged
        file (counts against the source) between the two, so that a window that fails a check
        leaves nothing behind."""
        scratch = self._staging()
        path = scratch.__enter__()
        try:
            writer = self._writer(path, measurement, window)
            try:
                async for batch in batches:
                    await _in_thread(writer.add, batch)
                written = await _in_thread(writer.finish)
            except BaseException:
                writer.abort()
                raise
        except BaseException:
            scratch.__exit__()
            raise
        return StagedWindow(measurement, window, written, scratch)

    async def acommit(self, staged: StagedWindow) -> WindowManifest:
        """Make a staged window the window's archive (see `tierflow._archive._manifest` for the
        commit protocol), then drop the local file."""
        try:
            return await _in_thread(self._commit, staged.measurement, staged.window, staged.written)
        finally:
            self.discard(staged)

    def discard(self, staged: StagedWindow) -> None:
        """Drop a staged window's local file (nothing in the archive changes). Idempotent."""
        staged.scratch.__exit__()

    def _staging(self) -> _Scratch:
        return _Scratch(self._staging_dir)

    def _writer(self, scratch: Path, measurement: str, window: Window) -> WindowFileWriter:
        manifest_key(measurement, window)  # refuses an empty measurement before any work
        metadata = {
            "tierflow.measurement": measurement,
            "tierflow.window_start": isoformat(window.start),
            "tierflow.window_stop": isoformat(window.stop),
            "tierflow.version": self.tierflow_version,
        }
        return WindowFileWriter(
            scratch,
            start_ns=_ns(window.start),
            stop_ns=_ns(window.stop),
            metadata=metadata,
            compression=self._compression,
            compression_level=self._compression_level,
            row_group_rows=self._row_group_rows,
        )

    def _commit(
        self, measurement: str, window: Window, written: WrittenFile | None
    ) -> WindowManifest:
        files: tuple[ArchivedFile, ...] = ()
        if written is not None:
            key = data_key(measurement, window, written.sha256)
            self.store.put_file(key, written.path)
            files = (
                ArchivedFile(
                    path=key,
                    measurement=measurement,
                    window=window,
                    rows=written.rows,
                    min_time_ns=written.min_time_ns,
                    max_time_ns=written.max_time_ns,
                    size=written.size,
                    sha256=written.sha256,
                    tierflow_version=self.tierflow_version,
                ),
            )
        key = manifest_key(measurement, window)
        manifest = WindowManifest(
            measurement=measurement,
            window=window,
            files=files,
            tags=written.tags if written else (),
            fields=written.fields if written else {},
            conflicts=written.conflicts if written else (),
            columns=written.columns if written else {},
            tierflow_version=self.tierflow_version,
            written_at=self._clock(),
            key=key,
        )
        self.store.put_bytes(key, manifest.to_json())
        keep = {file.path for file in files}
        for stale in self.store.list_prefix(data_prefix(measurement, window)):
            if stale.key not in keep:
                self.store.delete(stale.key)
        _drop_legacy_window(self.store, measurement, window)
        return manifest

    # -- reading -----------------------------------------------------------------------------

    def manifest(self, measurement: str, window: Window) -> WindowManifest | None:
        """The manifest of one window, or None if the window was never archived. A manifest of
        the layout before `m/` is read when the window has none of this layout."""
        for key in (manifest_key(measurement, window), legacy_manifest_key(measurement, window)):
            try:
                data = self.store.get_bytes(key)
            except ObjectNotFoundError:
                continue
            return WindowManifest.from_json(data, key=key)
        return None

    def manifests(
        self,
        *,
        measurement: str | None = None,
        start: datetime | None = None,
        stop: datetime | None = None,
    ) -> Iterator[WindowManifest]:
        """Manifests of windows overlapping `[start, stop)` (unbounded where None), of one
        measurement or all, ordered by window start then measurement. Fetched lazily."""
        for key, _, _ in self._manifest_keys(measurement, start, stop):
            yield WindowManifest.from_json(self.store.get_bytes(key), key=key)

    def _manifest_keys(
        self, measurement: str | None, start: datetime | None, stop: datetime | None
    ) -> list[tuple[str, str, Window]]:
        """(key, measurement, window) of the manifests to read, one per window: where a window
        has manifests of both layouts (a re-run crashed before removing the old one), the new
        one. A key holding only a hash of its measurement's name is resolved by reading one of
        that measurement's manifests."""
        if measurement is None:
            prefixes = [manifest_prefix()]
        else:
            prefixes = [manifest_prefix(measurement), legacy_manifest_prefix(measurement)]
        hashed: dict[str, str] = {}
        chosen: dict[tuple[str, Window], tuple[bool, str]] = {}
        for prefix in prefixes:
            for info in self.store.list_prefix(prefix):
                parsed = parse_manifest_key(info.key)
                if parsed is None or not _overlaps(parsed.window, start, stop):
                    continue
                name = parsed.measurement or measurement
                if name is None:
                    name = hashed.get(parsed.directory) or self._name_in(info.key)
                    hashed[parsed.directory] = name
                # New layout (legacy False) sorts first, so it wins.
                candidate = (parsed.legacy, info.key)
                chosen[name, parsed.window] = min(
                    chosen.get((name, parsed.window), candidate), candidate
                )
        found = [(key, name, window) for (name, window), (_, key) in chosen.items()]
        found.sort(key=lambda item: (item[2].start, item[1]))
        return found

    def _name_in(self, key: str) -> str:
        return WindowManifest.from_json(self.store.get_bytes(key), key=key).measurement

    def measurements(self) -> list[str]:
        """Every measurement with at least one archived window, sorted."""
        return sorted({name for _, name, _ in self._manifest_keys(None, None, None)})

    def read(
        self, start: datetime, stop: datetime, *, measurement: str | None = None
    ) -> Iterator[ArchivedBatch]:
        """Stream the points with time in `[start, stop)`, of one measurement or all: file by
        file in window order, each file's points in the order they were written, in batches of
        at most `read_batch_rows`. Memory does not grow with the range."""
        start_ns, stop_ns = _ns(start), _ns(stop)
        for manifest in self.manifests(measurement=measurement, start=start, stop=stop):
            for file in manifest.files:
                if file.max_time_ns < start_ns or file.min_time_ns >= stop_ns:
                    continue
                inside = start_ns <= file.min_time_ns and file.max_time_ns < stop_ns
                with self.store.open(file.path) as handle:
                    for points in read_file(
                        handle,
                        start_ns=None if inside else start_ns,
                        stop_ns=None if inside else stop_ns,
                        batch_rows=self._read_batch_rows,
                    ):
                        yield ArchivedBatch(
                            manifest.measurement, manifest.window, file.path, points
                        )

    # -- checking and querying ---------------------------------------------------------------

    def verify(self) -> list[VerifyProblem]:
        """Re-check every file every manifest names: that it exists, that its SHA-256 and its
        row count (from the Parquet footer) are the manifest's; and that every manifest reads.
        Returns the problems found, none when the archive is sound."""
        return verify_archive(self.store)

    def query(self, sql: str) -> QueryResult:
        """Run `sql` with DuckDB over the archive (the `archive-query` extra). A view per
        measurement (named as the measurement) and a view `points` over all of them are
        defined; see `tierflow._archive._query`."""
        from tierflow._archive._query import run_query

        return run_query(self, sql)

    def __repr__(self) -> str:
        return f"ParquetArchive({self.store!r})"


def _overlaps(window: Window, start: datetime | None, stop: datetime | None) -> bool:
    return (start is None or window.stop > start) and (stop is None or window.start < stop)


def _drop_legacy_window(store: ObjectStore, measurement: str, window: Window) -> None:
    """Remove the window's manifest and files of the layout before `m/`, if it has any. Called
    once the window's new manifest is committed, so readers never lack a manifest; the manifest
    goes first, so a crash leaves orphan files (which `verify` reports and the window's next run
    removes), never a manifest naming removed files. Listed rather than deleted blindly: an old
    key of a long name cannot exist on a local disk, and deleting it would fail there."""
    old = legacy_manifest_key(measurement, window)
    for info in store.list_prefix(old):
        if info.key == old:
            store.delete(old)
    for info in store.list_prefix(legacy_data_prefix(measurement, window)):
        store.delete(info.key)


async def _in_thread(function: Callable[..., _T], *args: object) -> _T:
    """`function(*args)` in a worker thread. If the caller is cancelled, the call is still
    waited for before the cancellation goes on: a thread cannot be stopped, and the writer must
    not be aborted (nor its scratch directory removed) while it is still writing."""
    call = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        with suppress(BaseException):
            await call
        raise


class _Scratch:
    """A private scratch directory, removed on exit whatever happened."""

    def __init__(self, parent: Path | None) -> None:
        self._parent = parent

    def __enter__(self) -> Path:
        try:
            if self._parent is not None:
                self._parent.mkdir(parents=True, exist_ok=True)
            self._path = Path(tempfile.mkdtemp(prefix="tierflow-archive-", dir=self._parent))
        except OSError as exc:
            raise ArchiveError(f"cannot make a staging directory: {exc}") from exc
        return self._path

    def __exit__(self, *exc: object) -> None:
        if (path := getattr(self, "_path", None)) is not None:
            shutil.rmtree(path, ignore_errors=True)
