"""The Parquet archive on a local store: real Parquet files in a temporary directory.

Types round trip exactly, memory stays flat whatever a window's size, a window's files appear
whole or not at all, re-runs replace, type conflicts are settled by rule and recorded, `verify`
finds what is wrong, ranges read back in order, and DuckDB can query it all.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

import tierflow._archive as archive_package
from tierflow._archive import (
    ArchiveError,
    Column,
    FieldType,
    LocalObjectStore,
    ObjectNotFoundError,
    ParquetArchive,
    Point,
    PointBatch,
    ProblemKind,
    TypeConflict,
    WindowManifest,
    open_archive,
    open_object_store,
    partition_date,
    widen,
)
from tierflow._archive._manifest import ManifestKey, manifest_key, parse_manifest_key
from tierflow._errors import ConfigError, TierflowError
from tierflow._windows import EPOCH, Window

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def hours(first: float, last: float) -> Window:
    return Window(T0 + first * HOUR, T0 + last * HOUR)


def batch(columns: dict[str, pa.Array | list[Any]], tags: Iterable[str] = ()) -> PointBatch:
    return PointBatch(pa.record_batch(columns), frozenset(tags))


def at(
    offset: int, columns: dict[str, pa.Array | list[Any]], tags: Iterable[str] = ()
) -> PointBatch:
    """A batch of one point, `offset` ns after the start of the first hour (`hours(0, 1)`)."""
    time = pa.array([ns(hours(0, 1).start) + offset], pa.int64())
    return batch({"time": time, **columns}, tags)


def write_first_hour(archive: ParquetArchive, *batches: PointBatch) -> WindowManifest:
    """Archive `batches` (made by `at`) as measurement `m`'s window `hours(0, 1)`."""
    return archive.write_window("m", hours(0, 1), list(batches))


def points(
    window: Window, count: int, *, tags: dict[str, str] | None = None, **fields: Any
) -> PointBatch:
    """`count` points spread over `window`, every field holding the same value."""
    step = (ns(window.stop) - ns(window.start)) // count
    made = [Point(ns(window.start) + i * step, tags or {}, fields) for i in range(count)]
    return PointBatch.from_points(made)


def rows(batches: Iterable[PointBatch]) -> list[dict[str, Any]]:
    """Row dicts with `time` as int nanoseconds (Python datetimes cannot hold them)."""
    found = []
    for chunk in batches:
        data = chunk.data.set_column(
            chunk.data.schema.get_field_index("time"),
            "time",
            chunk.data.column("time").cast(pa.int64()),
        )
        found.extend(data.to_pylist())
    return found


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "archive")


@pytest.fixture
def archive(store: LocalObjectStore, tmp_path: Path) -> ParquetArchive:
    return ParquetArchive(
        store, staging_dir=tmp_path / "staging", tierflow_version="9.9.9", clock=lambda: NOW
    )


def read_all(
    archive: ParquetArchive, window: Window, measurement: str | None = None
) -> list[dict[str, Any]]:
    return rows(b.points for b in archive.read(window.start, window.stop, measurement=measurement))


def data_keys(store: LocalObjectStore) -> list[str]:
    return [info.key for info in store.list_prefix() if info.key.endswith(".parquet")]


# ---------------------------------------------------------------------------------------------
# The package's surface


def test_the_package_exports_exactly_its_public_api() -> None:
    assert set(archive_package.__all__) == {
        "ArchiveError", "ArchivedBatch", "ArchivedFile", "Column", "FieldType", "LocalObjectStore",
        "ObjectInfo", "ObjectNotFoundError", "ObjectStore", "ParquetArchive", "Point",
        "PointBatch", "ProblemKind", "QueryResult", "S3ObjectStore", "TypeConflict",
        "VerifyProblem", "WindowManifest", "open_archive", "open_object_store", "partition_date",
        "widen",
    }  # fmt: skip
    assert issubclass(ArchiveError, TierflowError)
    assert issubclass(ObjectNotFoundError, ArchiveError)


def test_importing_the_archive_loads_no_optional_backend() -> None:
    code = (
        "import sys, tierflow._archive; "
        "print(sorted({'fsspec', 's3fs', 'duckdb'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Round trip of every type


HOSTILE = [
    "a,b=c d",
    'quote " and \\ backslash',
    "line\nbreak\ttab",
    "ünïcødé ✓ 🚀",
    "../../etc/passwd",
    "%2F%00",
    "",
    "'; DROP TABLE points; --",
]


def test_every_type_round_trips_exactly(archive: ParquetArchive) -> None:
    window = hours(0, 1)
    base = ns(window.start)
    times = [base, base + 1, base + 999_999_999, base + 3_599_999_999_999]
    data = batch(
        {
            "time": pa.array(times, pa.int64()),
            "host": pa.array(["h1", None, "h3", HOSTILE[0]]),
            "région 🚀": pa.array([None, "ü", None, None]),
            "f": pa.array([1.5, -0.0, None, 1e308], pa.float64()),
            "i": pa.array([2**53 + 1, -(2**63), 2**63 - 1, None], pa.int64()),
            "u": pa.array([2**64 - 1, 0, None, 2**63], pa.uint64()),
            "b": pa.array([True, False, None, True]),
            "s": pa.array(["", "ünïcødé", None, HOSTILE[2]]),
        },
        tags={"host", "région 🚀"},
    )
    manifest = archive.write_window("cpu", window, [data])

    assert manifest.fields == {
        "b": FieldType.BOOLEAN,
        "f": FieldType.FLOAT,
        "i": FieldType.INTEGER,
        "s": FieldType.STRING,
        "u": FieldType.UNSIGNED,
    }
    assert manifest.tags == ("host", "région 🚀")
    assert manifest.conflicts == ()
    [read] = list(archive.read(window.start, window.stop))
    schema = read.points.data.schema
    assert schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("host").type == pa.dictionary(pa.int32(), pa.string())
    assert [schema.field(n).type for n in ("f", "i", "u", "b", "s")] == [
        pa.float64(), pa.int64(), pa.uint64(), pa.bool_(), pa.string(),
    ]  # fmt: skip
    assert read.points.tags == {"host", "région 🚀"}
    assert set(read.points.fields) == {"f", "i", "u", "b", "s"}
    assert rows([read.points]) == rows([data])
    assert [row["time"] for row in rows([read.points])] == times
    assert (read.measurement, read.window) == ("cpu", window)


def test_narrow_and_alternative_arrow_types_are_stored_canonically(archive: ParquetArchive) -> None:
    window = hours(0, 1)
    data = batch(
        {
            "time": pa.array([ns(window.start) // 1000], pa.timestamp("us", tz="Europe/Berlin")),
            "tag": pa.array(["x"], pa.large_string()),
            "f32": pa.array([0.5], pa.float32()),
            "i8": pa.array([-3], pa.int8()),
            "u16": pa.array([7], pa.uint16()),
            "ls": pa.array(["long"], pa.large_string()),
            "ds": pa.array(["dict"]).dictionary_encode(),
            "absent": pa.nulls(1),
        },
        tags={"tag"},
    )
    manifest = archive.write_window("m", window, [data])
    assert manifest.fields == {
        "ds": FieldType.STRING,
        "f32": FieldType.FLOAT,
        "i8": FieldType.INTEGER,
        "ls": FieldType.STRING,
        "u16": FieldType.UNSIGNED,
    }
    assert read_all(archive, window) == [
        {
            "time": ns(window.start),
            "tag": "x",
            "ds": "dict",
            "f32": 0.5,
            "i8": -3,
            "ls": "long",
            "u16": 7,
        }
    ]


def test_hostile_tag_values_keys_and_measurement_names_round_trip(archive: ParquetArchive) -> None:
    window = hours(0, 1)
    measurement = 'cpu load/ü=1,"x"'
    made = [
        Point(ns(window.start) + i, {"k": value, f"key {i} ✓=,": value}, {"v": i})
        for i, value in enumerate(HOSTILE)
    ]
    archive.write_window(measurement, window, [PointBatch.from_points(made)])
    found = read_all(archive, window, measurement)
    assert [(row["k"], row[f"key {i} ✓=,"]) for i, row in enumerate(found)] == [
        (value, value) for value in HOSTILE
    ]
    assert archive.measurements() == [measurement]
    assert manifest_key(measurement, window).count("/") == 3  # the name's slash is encoded


def test_from_points_infers_types_and_honours_given_ones() -> None:
    made = PointBatch.from_points(
        [
            Point(1, {"host": "a"}, {"i": 1, "big": 2**64 - 1, "b": True, "x": 1, "given": 5}),
            Point(2, {}, {"i": 2, "f": 0.5, "x": "one", "given": 6}),
        ],
        field_types={"given": FieldType.UNSIGNED},
    )
    types = {name: made.data.schema.field(name).type for name in made.fields}
    assert types == {
        "b": pa.bool_(), "big": pa.uint64(), "f": pa.float64(), "given": pa.uint64(),
        "i": pa.int64(), "x": pa.string(),
    }  # fmt: skip
    assert made.tags == {"host"}
    assert made.data.column("x").to_pylist() == ["1", "one"]
    assert made.data.column("host").to_pylist() == ["a", None]


# ---------------------------------------------------------------------------------------------
# Layout and manifest


def test_layout_is_by_measurement_and_window_start_date_with_no_hive_directories(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    across_midnight = hours(22, 26)  # 22:00 on 1 Nov to 02:00 on 2 Nov
    after_midnight = Point(ns(T0 + 25 * HOUR), {}, {"v": 1.0})
    manifest = archive.write_window(
        "sensor", across_midnight, [PointBatch.from_points([after_midnight])]
    )

    [file] = manifest.files
    assert partition_date(across_midnight).isoformat() == "2026-11-01"
    assert file.path == (
        f"m/sensor/2026-11-01/20261101T220000Z_20261102T020000Z-{file.sha256[:16]}.parquet"
    )
    assert manifest.key == "_manifests/m/sensor/20261101T220000Z_20261102T020000Z.json"
    assert store.exists(file.path)
    assert file.size == store.size(file.path)
    assert (file.rows, file.min_time_ns, file.max_time_ns) == (
        1,
        after_midnight.time_ns,
        after_midnight.time_ns,
    )
    assert (file.measurement, file.window, file.tierflow_version) == (
        "sensor",
        across_midnight,
        "9.9.9",
    )


def test_the_manifest_is_json_in_the_archive_and_parses_back(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    written = archive.write_window("cpu", window, [points(window, 3, tags={"h": "a"}, v=1)])
    document = json.loads(store.get_bytes(written.key))
    assert document["format"] == "tierflow-archive/2"
    assert document["window"] == {"start": "2026-11-01T00:00:00Z", "stop": "2026-11-01T01:00:00Z"}
    assert document["tierflow_version"] == "9.9.9"
    assert document["written_at"] == "2026-11-20T12:00:00Z"
    assert document["files"][0]["rows"] == 3
    assert set(document["files"][0]) == {
        "path",
        "rows",
        "min_time_ns",
        "max_time_ns",
        "bytes",
        "sha256",
    }
    assert archive.manifest("cpu", window) == written
    assert WindowManifest.from_json(written.to_json()) == written
    assert archive.manifest("cpu", hours(1, 2)) is None


def test_manifest_keys_round_trip_sub_second_windows() -> None:
    window = Window(T0 + timedelta(microseconds=250), T0 + timedelta(seconds=1))
    parsed = parse_manifest_key(manifest_key("a/b c", window))
    assert parsed == ManifestKey(window, "a/b c", "a%2Fb%20c", legacy=False)
    assert parse_manifest_key("_manifests/m/x/garbage.json") is None
    assert parse_manifest_key("_manifests/measurement=x/garbage.json") is None
    assert parse_manifest_key("_manifests/elsewhere/1_2.json") is None


def test_the_tierflow_version_defaults_to_the_package_version(store: LocalObjectStore) -> None:
    import tierflow

    manifest = ParquetArchive(store).write_window("m", hours(0, 1), [points(hours(0, 1), 1, v=1)])
    assert manifest.tierflow_version == tierflow.__version__
    assert manifest.files[0].tierflow_version == tierflow.__version__


def test_manifests_list_by_measurement_and_range_in_window_order(archive: ParquetArchive) -> None:
    for measurement in ("mem", "cpu"):
        for index in (2, 0, 1):
            window = hours(index, index + 1)
            archive.write_window(measurement, window, [points(window, 1, v=index)])

    listed = [(m.measurement, m.window.start.hour) for m in archive.manifests()]
    assert listed == [("cpu", 0), ("mem", 0), ("cpu", 1), ("mem", 1), ("cpu", 2), ("mem", 2)]
    ranged = archive.manifests(measurement="mem", start=T0 + 0.5 * HOUR, stop=T0 + 2 * HOUR)
    assert [(m.measurement, m.window.start.hour) for m in ranged] == [("mem", 0), ("mem", 1)]
    assert archive.measurements() == ["cpu", "mem"]


# ---------------------------------------------------------------------------------------------
# Streaming in bounded memory

_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    import pyarrow as pa, pyarrow.compute as pc
    from tierflow._archive import LocalObjectStore, ParquetArchive, PointBatch
    from tierflow._memtrace import rss_bytes
    from tierflow._windows import Window

    total, size = int(sys.argv[1]), 50_000
    start = datetime(2026, 11, 1, tzinfo=UTC)
    t0 = int(start.timestamp()) * 10**9
    index = pa.array(range(size), pa.int64())
    offsets = pc.multiply(index, 1_000_000)  # a point per millisecond
    hosts = pa.DictionaryArray.from_arrays(
        pc.cast(pc.bit_wise_and(index, 15), pa.int32()), pa.array([f"host-{i}" for i in range(16)])
    )
    value = pc.divide(pc.cast(index, pa.float64()), 7.0)

    def batches():
        for i in range(total // size):
            yield PointBatch(
                pa.record_batch({
                    "time": pc.add(offsets, t0 + i * size * 1_000_000),
                    "host": hosts,
                    "value": pc.add(value, i),
                    "count": pc.add(index, i),
                }),
                frozenset({"host"}),
            )

    with tempfile.TemporaryDirectory() as scratch:
        archive = ParquetArchive(LocalObjectStore(Path(scratch) / "a"), staging_dir=Path(scratch))
        pool = pa.default_memory_pool()
        before = rss_bytes()
        manifest = archive.write_window("m", Window(start, start + timedelta(days=1)), batches())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({
            "rows": manifest.rows, "rss_growth": peak - before, "arrow_peak": pool.max_memory(),
        }))
    """
)


def _probe(total: int) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(total)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, int] = json.loads(result.stdout)
    return measured


def test_memory_does_not_grow_with_the_window() -> None:
    # Each size runs in its own process, so peaks (RSS and Arrow's allocator) start clean.
    # 2M rows hold ~56 MB of Arrow data; a writer that kept them would show it here.
    small, large = _probe(200_000), _probe(2_000_000)
    assert (small["rows"], large["rows"]) == (200_000, 2_000_000)
    print(f"memory: 200k rows {small}, 2M rows {large}")
    assert large["arrow_peak"] < small["arrow_peak"] * 1.25
    assert large["arrow_peak"] < 48 * 2**20
    assert large["rss_growth"] < small["rss_growth"] * 2 + 16 * 2**20


def test_batches_are_grouped_into_row_groups(store: LocalObjectStore, tmp_path: Path) -> None:
    archive = ParquetArchive(store, staging_dir=tmp_path, row_group_rows=1000)
    window = hours(0, 1)
    manifest = archive.write_window("m", window, (points(window, 300, v=i) for i in range(10)))
    metadata = pq.read_metadata(store.uri(manifest.files[0].path))
    assert metadata.num_rows == 3000
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        1200,
        1200,
        600,
    ]


async def test_an_async_source_is_written_the_same_way(archive: ParquetArchive) -> None:
    window = hours(0, 1)

    async def source() -> AsyncIterator[PointBatch]:
        for index in range(3):
            await asyncio.sleep(0)
            yield points(hours(index / 3, (index + 1) / 3), 10, v=index)

    manifest = await archive.awrite_window("m", window, source())
    assert manifest.rows == 30
    assert archive.verify() == []


async def test_cancelling_an_async_write_leaves_nothing_behind(
    archive: ParquetArchive, store: LocalObjectStore, tmp_path: Path
) -> None:
    window = hours(0, 1)
    first_written = asyncio.Event()

    async def source() -> AsyncIterator[PointBatch]:
        yield points(hours(0, 0.5), 1000, v=1)
        first_written.set()
        await asyncio.sleep(3600)
        yield points(hours(0.5, 1), 1000, v=2)

    task = asyncio.create_task(archive.awrite_window("m", window, source()))
    await first_written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(store.list_prefix()) == []
    assert list((tmp_path / "staging").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Atomic and idempotent


def failing(window: Window, after: int) -> Iterator[PointBatch]:
    for index in range(after):
        yield points(hours(index / 10, (index + 1) / 10), 1000, v=index)
    raise RuntimeError("the export broke off")


def test_a_failure_mid_write_leaves_nothing_behind(
    archive: ParquetArchive, store: LocalObjectStore, tmp_path: Path
) -> None:
    window = hours(0, 1)
    with pytest.raises(RuntimeError, match="broke off"):
        archive.write_window("m", window, failing(window, after=3))
    assert list(store.list_prefix()) == []
    assert archive.manifest("m", window) is None
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_failure_in_a_re_run_keeps_the_previous_run(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    first = archive.write_window("m", window, [points(window, 5, v=1)])
    with pytest.raises(RuntimeError):
        archive.write_window("m", window, failing(window, after=2))
    assert archive.manifest("m", window) == first
    assert data_keys(store) == [first.files[0].path]
    assert len(read_all(archive, window)) == 5
    assert archive.verify() == []


def test_points_outside_the_window_are_refused_and_nothing_is_written(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(1, 2)
    for stray in (ns(window.start) - 1, ns(window.stop)):
        good = points(window, 2, v=1)
        bad = PointBatch.from_points([Point(stray, {}, {"v": 1})])
        with pytest.raises(ArchiveError, match="outside the window"):
            archive.write_window("m", window, [good, bad])
    assert list(store.list_prefix()) == []


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array([None, 1], pa.int64()), "no time"),
        (pa.array([1, 2], pa.timestamp("ns")), "time zone"),
        (pa.array(["a", "b"]), "not int64 ns"),
    ],
)
def test_bad_time_columns_are_refused(
    archive: ParquetArchive, column: pa.Array, message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        archive.write_window("m", Window(EPOCH, T0), [batch({"time": column, "v": [1.0, 2.0]})])


def test_a_failed_manifest_commit_leaves_the_previous_run_readable(tmp_path: Path) -> None:
    class ManifestFails(LocalObjectStore):
        fail = False

        def put_bytes(self, key: str, data: bytes) -> None:
            if self.fail and key.startswith("_manifests/"):
                raise ArchiveError("the store went away")
            super().put_bytes(key, data)

    store = ManifestFails(tmp_path / "archive")
    archive = ParquetArchive(store, staging_dir=tmp_path)
    window = hours(0, 1)
    first = archive.write_window("m", window, [points(window, 4, v=1)])
    store.fail = True
    with pytest.raises(ArchiveError, match="went away"):
        archive.write_window("m", window, [points(window, 9, v=2)])

    # The new data file was stored but never committed: readers still see the first run.
    assert len(data_keys(store)) == 2
    assert archive.manifest("m", window) == first
    assert [row["v"] for row in read_all(archive, window)] == [1] * 4
    [orphan] = set(data_keys(store)) - {first.files[0].path}
    assert [(p.path, p.kind) for p in archive.verify()] == [(orphan, ProblemKind.ORPHAN)]
    store.fail = False
    again = archive.write_window("m", window, [points(window, 9, v=2)])
    assert data_keys(store) == [again.files[0].path]  # the orphan is gone


def test_a_re_run_replaces_the_window_and_removes_the_old_file(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    first = archive.write_window("m", window, [points(window, 5, v=1)])
    second = archive.write_window("m", window, [points(window, 7, v=2)])
    assert first.files[0].path != second.files[0].path
    assert data_keys(store) == [second.files[0].path]
    assert [row["v"] for row in read_all(archive, window)] == [2] * 7
    assert archive.verify() == []


def test_the_same_content_gives_the_same_file(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    first = archive.write_window("m", window, [points(window, 5, tags={"h": "a"}, v=1)])
    second = archive.write_window("m", window, [points(window, 5, tags={"h": "a"}, v=1)])
    assert second.files == first.files
    assert data_keys(store) == [first.files[0].path]
    assert archive.verify() == []


def test_a_window_that_became_empty_keeps_a_manifest_and_loses_its_file(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    archive.write_window("m", window, [points(window, 5, v=1)])
    empty = archive.write_window("m", window, [])
    assert (empty.files, empty.rows, empty.fields) == ((), 0, {})
    assert data_keys(store) == []
    assert archive.manifest("m", window) == empty
    assert read_all(archive, window) == []


def test_an_empty_measurement_name_is_refused(archive: ParquetArchive) -> None:
    with pytest.raises(ArchiveError, match="empty"):
        archive.write_window("", hours(0, 1), [])


# ---------------------------------------------------------------------------------------------
# Type conflicts and schema changes within a window


@pytest.mark.parametrize(
    ("first", "second", "widened"),
    [
        (FieldType.INTEGER, FieldType.INTEGER, FieldType.INTEGER),
        (FieldType.INTEGER, FieldType.FLOAT, FieldType.FLOAT),
        (FieldType.UNSIGNED, FieldType.FLOAT, FieldType.FLOAT),
        (FieldType.INTEGER, FieldType.UNSIGNED, FieldType.FLOAT),
        (FieldType.INTEGER, FieldType.STRING, FieldType.STRING),
        (FieldType.FLOAT, FieldType.BOOLEAN, FieldType.STRING),
        (FieldType.BOOLEAN, FieldType.BOOLEAN, FieldType.BOOLEAN),
        (FieldType.BOOLEAN, FieldType.STRING, FieldType.STRING),
    ],
)
def test_widen_is_symmetric(first: FieldType, second: FieldType, widened: FieldType) -> None:
    assert widen(first, second) == widened
    assert widen(second, first) == widened


def test_integer_then_float_keeps_each_type_in_a_column_of_its_own(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    base = ns(window.start)
    manifest = write_first_hour(
        archive,
        at(0, {"v": pa.array([2**53 + 1], pa.int64())}),
        at(1, {"v": pa.array([0.5])}),
        at(2, {"v": pa.array([3], pa.int64())}),
    )
    assert manifest.fields == {}
    assert manifest.conflicts == (TypeConflict("v", (FieldType.FLOAT, FieldType.INTEGER)),)
    assert manifest.columns == {
        "v::float": Column("field", "v", FieldType.FLOAT),
        "v::integer": Column("field", "v", FieldType.INTEGER),
    }
    # Every value with its own type and bits: 2**53 + 1 is not rounded through a float.
    assert read_all(archive, window) == [
        {"time": base, "v::float": None, "v::integer": 2**53 + 1},
        {"time": base + 1, "v::float": 0.5, "v::integer": None},
        {"time": base + 2, "v::float": None, "v::integer": 3},
    ]
    (read,) = archive.read(window.start, window.stop)
    assert {read.points.key(name) for name in read.points.fields} == {"v"}
    parquet = pq.ParquetFile(store.uri(manifest.files[0].path))
    assert parquet.schema_arrow.field("v::integer").metadata == {
        b"tierflow.kind": b"field",
        b"tierflow.key": b"v",
    }
    assert archive.verify() == []


def test_every_type_of_a_field_keeps_its_values(archive: ParquetArchive) -> None:
    window = hours(0, 1)
    base = ns(window.start)
    manifest = write_first_hour(
        archive,
        at(0, {"v": pa.array([42], pa.int64()), "b": [True]}),
        at(1, {"v": pa.array([True]), "b": [1.5]}),
        at(2, {"v": pa.array(["text"]), "b": [False]}),
    )
    assert manifest.fields == {}
    assert {c.field: c.types for c in manifest.conflicts} == {
        "b": (FieldType.FLOAT, FieldType.BOOLEAN),
        "v": (FieldType.INTEGER, FieldType.BOOLEAN, FieldType.STRING),
    }
    found = read_all(archive, window)
    assert [{k: v for k, v in row.items() if v is not None} for row in found] == [
        {"time": base, "v::integer": 42, "b::boolean": True},
        {"time": base + 1, "v::boolean": True, "b::float": 1.5},
        {"time": base + 2, "v::string": "text", "b::boolean": False},
    ]


def test_tags_and_fields_appearing_late_are_null_before(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    base = ns(window.start)
    manifest = write_first_hour(
        archive,
        at(0, {"a": ["x"], "v": [1.0]}, tags={"a"}),
        at(1, {"v": [2.0]}),  # fits: a is null
        at(2, {"b": ["y"], "w": [True]}, tags={"b"}),
        at(3, {"a": ["z"], "v": [4.0]}, tags={"a"}),
    )
    assert manifest.tags == ("a", "b")
    assert manifest.fields == {"v": FieldType.FLOAT, "w": FieldType.BOOLEAN}
    assert read_all(archive, window) == [
        {"time": base, "a": "x", "b": None, "v": 1.0, "w": None},
        {"time": base + 1, "a": None, "b": None, "v": 2.0, "w": None},
        {"time": base + 2, "a": None, "b": "y", "v": None, "w": True},
        {"time": base + 3, "a": "z", "b": None, "v": 4.0, "w": None},
    ]
    parquet = pq.ParquetFile(store.uri(manifest.files[0].path))
    assert parquet.schema_arrow.names == ["time", "a", "b", "v", "w"]


def test_a_tag_and_a_field_of_one_name_are_both_kept(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    base = ns(window.start)
    manifest = write_first_hour(
        archive,
        at(0, {"x": ["tag0"]}, tags={"x"}),
        at(1, {"x": [1.5]}),
    )
    assert manifest.tags == ("x",)
    assert manifest.fields == {"x": FieldType.FLOAT}
    assert manifest.columns == {
        "x": Column("tag", "x"),
        "x::field": Column("field", "x", FieldType.FLOAT),
    }
    (read,) = archive.read(window.start, window.stop)
    assert read.points.tags == {"x"}
    assert read.points.key("x::field") == "x"
    assert rows([read.points]) == [
        {"time": base, "x": "tag0", "x::field": None},
        {"time": base + 1, "x": None, "x::field": 1.5},
    ]


def test_types_of_different_windows_are_kept_as_each_window_stored_them(
    archive: ParquetArchive,
) -> None:
    first, second = hours(0, 1), hours(1, 2)
    archive.write_window("m", first, [points(first, 2, v=2**62 + 1)])
    archive.write_window("m", second, [points(second, 2, v=0.5)])
    read = list(archive.read(first.start, second.stop))
    assert [b.points.data.schema.field("v").type for b in read] == [pa.int64(), pa.float64()]
    assert read[0].points.data.column("v").to_pylist() == [2**62 + 1] * 2


# ---------------------------------------------------------------------------------------------
# Reading back


def test_a_range_reads_back_across_partitions_in_window_order(archive: ParquetArchive) -> None:
    windows = [Window(T0 + i * 12 * HOUR, T0 + (i + 1) * 12 * HOUR) for i in range(4)]  # 2 days
    for index in (3, 1, 0, 2):
        window = windows[index]
        for measurement in ("cpu", "mem"):
            archive.write_window(measurement, window, [points(window, 12, v=index)])

    start, stop = T0 + 6 * HOUR, T0 + 42 * HOUR
    found = list(archive.read(start, stop, measurement="cpu"))
    times = [row["time"] for row in rows(b.points for b in found)]
    assert times == sorted(times)
    assert (times[0], times[-1]) == (ns(start), ns(stop - HOUR))
    assert len(times) == 36
    assert {b.path.split("/")[2] for b in found} == {"2026-11-01", "2026-11-02"}
    everything = [(b.window.start, b.measurement) for b in archive.read(start, stop)]
    assert everything == sorted(everything)
    assert {m for _, m in everything} == {"cpu", "mem"}
    assert list(archive.read(T0 - 2 * HOUR, T0)) == []


def test_reading_a_range_inside_a_window_streams_only_that_range(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    archive = ParquetArchive(store, staging_dir=tmp_path, row_group_rows=100, read_batch_rows=30)
    window = hours(0, 10)
    archive.write_window("m", window, (points(hours(i, i + 1), 100, v=i) for i in range(10)))
    found = list(archive.read(T0 + 4 * HOUR, T0 + 6 * HOUR))
    assert max(b.points.num_rows for b in found) <= 30
    assert sorted({row["v"] for row in rows(b.points for b in found)}) == [4, 5]
    assert sum(b.points.num_rows for b in found) == 200


# ---------------------------------------------------------------------------------------------
# verify


@pytest.fixture
def two_windows(archive: ParquetArchive) -> list[WindowManifest]:
    made = []
    for index in range(2):
        window = hours(index, index + 1)
        made.append(
            archive.write_window("m", window, [points(window, 50, tags={"h": "a"}, v=index)])
        )
    return made


def test_verify_passes_on_a_sound_archive(
    archive: ParquetArchive, two_windows: list[WindowManifest]
) -> None:
    assert archive.verify() == []


def test_verify_finds_a_deleted_file(
    archive: ParquetArchive, store: LocalObjectStore, two_windows: list[WindowManifest]
) -> None:
    path = two_windows[0].files[0].path
    store.delete(path)
    [problem] = archive.verify()
    assert (problem.path, problem.kind) == (path, ProblemKind.MISSING)
    assert str(problem).startswith(f"{path}: missing")


def test_verify_finds_a_corrupted_byte(
    archive: ParquetArchive, store: LocalObjectStore, two_windows: list[WindowManifest]
) -> None:
    path = two_windows[1].files[0].path
    local = Path(store.uri(path))
    content = bytearray(local.read_bytes())
    content[len(content) // 2] ^= 0xFF
    local.write_bytes(bytes(content))
    problems = archive.verify()
    assert [(p.path, p.kind) for p in problems][:1] == [(path, ProblemKind.CHECKSUM_MISMATCH)]
    assert {p.path for p in problems} == {path}


def test_verify_finds_a_row_count_that_disagrees_with_the_manifest(
    archive: ParquetArchive, store: LocalObjectStore, two_windows: list[WindowManifest]
) -> None:
    key = two_windows[0].key
    document = json.loads(store.get_bytes(key))
    document["files"][0]["rows"] = 51
    store.put_bytes(key, json.dumps(document).encode())
    [problem] = archive.verify()
    assert (problem.path, problem.kind) == (
        two_windows[0].files[0].path,
        ProblemKind.ROW_COUNT_MISMATCH,
    )
    assert "50 rows" in problem.detail
    assert "51" in problem.detail


def test_verify_finds_an_unreadable_file_and_a_bad_manifest(
    archive: ParquetArchive, store: LocalObjectStore, two_windows: list[WindowManifest]
) -> None:
    path = two_windows[0].files[0].path
    store.put_bytes(path, b"not parquet at all")
    store.put_bytes(two_windows[1].key, b"{not json")
    problems = {(p.path, p.kind) for p in archive.verify()}
    assert problems == {
        (path, ProblemKind.CHECKSUM_MISMATCH),
        (path, ProblemKind.UNREADABLE),
        (two_windows[1].key, ProblemKind.BAD_MANIFEST),
        # Named by the manifest that no longer reads: nothing reads it now.
        (two_windows[1].files[0].path, ProblemKind.ORPHAN),
    }


# ---------------------------------------------------------------------------------------------
# DuckDB


@pytest.fixture
def duckdb_available() -> None:
    pytest.importorskip("duckdb", reason="DuckDB (the archive-query extra) is not installed")


@pytest.mark.usefixtures("duckdb_available")
def test_sql_over_the_archive(archive: ParquetArchive) -> None:
    first, second = hours(23, 24), hours(24, 25)
    measurement = 'cpu "load"/1'
    archive.write_window(measurement, first, [points(first, 4, tags={"host": "a"}, v=1)])
    archive.write_window(measurement, second, [points(second, 6, tags={"host": "b"}, v=0.5)])
    archive.write_window("mem", first, [points(first, 3, free=7)])

    result = archive.query(
        "SELECT measurement, count(*) AS n, sum(v) AS total FROM points "
        "GROUP BY measurement ORDER BY measurement"
    )
    assert result.columns == ("measurement", "n", "total")
    assert result.rows == [('cpu "load"/1', 10, 7.0), ("mem", 3, None)]

    per_host = archive.query(
        'SELECT host, min(epoch_ns(time)) FROM "cpu ""load""/1" GROUP BY ALL ORDER BY host'
    )
    assert per_host.rows == [("a", ns(first.start)), ("b", ns(second.start))]
    assert archive.query("SELECT typeof(free) FROM mem LIMIT 1").rows == [("BIGINT",)]


@pytest.mark.usefixtures("duckdb_available")
def test_sql_over_an_empty_archive_and_bad_sql(archive: ParquetArchive) -> None:
    assert archive.query("SELECT count(*) FROM points").rows == [(0,)]
    with pytest.raises(ArchiveError, match="query failed"):
        archive.query("SELECT nonsense FROM nowhere")


@pytest.mark.usefixtures("duckdb_available")
def test_sql_ignores_files_no_manifest_commits(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    manifest = archive.write_window("m", window, [points(window, 5, v=1)])
    orphan = manifest.files[0].path.replace(".parquet", "x.parquet")
    store.put_file(orphan, Path(store.uri(manifest.files[0].path)))
    assert archive.query("SELECT count(*) FROM m").rows == [(5,)]


# ---------------------------------------------------------------------------------------------
# URLs and the local store's specifics (the shared contract is in the integration suite)


def test_open_object_store_understands_paths_and_file_urls(tmp_path: Path) -> None:
    by_path = open_object_store(str(tmp_path / "a"))
    by_url = open_object_store(f"file://{tmp_path}/b%20c")
    assert isinstance(by_path, LocalObjectStore)
    assert by_path.root == tmp_path / "a"
    assert isinstance(by_url, LocalObjectStore)
    assert by_url.root == tmp_path / "b c"
    assert open_archive(str(tmp_path / "a")).store.url == str(tmp_path / "a")


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("file://host/path", None),
        ("file:relative", None),
        ("gs://bucket/x", None),
        ("", None),
        ("/tmp/x", {"key": "k"}),
        ("s3://", None),
    ],
)
def test_open_object_store_refuses_what_it_cannot_open(
    url: str, options: dict[str, str] | None
) -> None:
    with pytest.raises(ConfigError):
        open_object_store(url, storage_options=options)


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../up", "a/../b", ".hidden", "a/.tmp", "a\\b", "a/"]
)
def test_invalid_keys_are_refused(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(ArchiveError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_a_failed_local_write_leaves_no_temporary_file(store: LocalObjectStore) -> None:
    store.put_bytes("a/b", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        store.put_stream("a/b", chunks())
    assert store.get_bytes("a/b") == b"old"
    assert [p.name for p in (store.root / "a").iterdir()] == ["b"]


def test_local_temporary_files_are_invisible(store: LocalObjectStore) -> None:
    store.put_bytes("a/b", b"x")
    (store.root / "a" / ".b.123.tmp").write_bytes(b"partial")
    assert [info.key for info in store.list_prefix()] == ["a/b"]
