"""The archive's layout on a local store: no directory a hive reader turns into a column, names
of any length, archives of the layout before `m/` still read and replaced, orphans reported.

The old layout is built by hand here (`measurement=<m>/date=<d>/…`, as the code before `m/`
wrote it), so these tests do not take it from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from typer.testing import CliRunner

from tests.unit import test_archive
from tests.unit.test_archive import data_keys, hours, ns, points, read_all
from tierflow._archive import (
    LocalObjectStore,
    ParquetArchive,
    Point,
    PointBatch,
    ProblemKind,
)
from tierflow._windows import Window

# test_archive's fixtures: a local archive in tmp_path.
store, archive = test_archive.store, test_archive.archive


@pytest.fixture
def duckdb_available() -> None:
    pytest.importorskip("duckdb", reason="DuckDB (the archive-query extra) is not installed")


def shadowing(window: Window) -> PointBatch:
    """Two points with tags named as the old layout's hive directories."""
    start = ns(window.start)
    return PointBatch.from_points(
        [
            Point(start, {"date": "1999-12-31", "measurement": "inner"}, {"v": 1.5}),
            Point(start + 1, {"date": "yesterday", "measurement": "outer"}, {"v": 2.5}),
        ]
    )


# ---------------------------------------------------------------------------------------------
# No column is made up, none is hidden


@pytest.mark.usefixtures("duckdb_available")
def test_tags_named_date_and_measurement_are_visible_in_sql(archive: ParquetArchive) -> None:
    window = hours(0, 1)
    archive.write_window("cpu", window, [shadowing(window)])
    start = ns(window.start)
    as_field = PointBatch.from_points([Point(start, {"host": "h"}, {"measurement": "a field"})])
    archive.write_window("mem", window, [as_field])
    archive.write_window("disk", window, [points(window, 2, used=3)])

    cpu = archive.query("SELECT * FROM cpu ORDER BY time")
    assert cpu.columns == ("time", "date", "measurement", "v")
    assert [row[1:] for row in cpu.rows] == [
        ("1999-12-31", "inner", 1.5),
        ("yesterday", "outer", 2.5),
    ]
    assert archive.query("SELECT * FROM mem").columns == ("time", "host", "measurement")

    every = archive.query(
        'SELECT measurement, "measurement::tag", "measurement::field", date, v, used, '
        "epoch_ns(time) FROM points ORDER BY measurement, time"
    )
    assert every.rows == [
        ("cpu", "inner", None, "1999-12-31", 1.5, None, start),
        ("cpu", "outer", None, "yesterday", 2.5, None, start + 1),
        ("disk", None, None, None, None, 3, start),
        ("disk", None, None, None, None, 3, start + 1800 * 10**9),
        ("mem", None, "a field", None, None, None, start),
    ]
    columns = set(archive.query("SELECT * FROM points LIMIT 0").columns)
    assert columns == {
        "time", "measurement", "date", "measurement::tag", "measurement::field", "host", "v",
        "used",
    }  # fmt: skip


@pytest.mark.usefixtures("duckdb_available")
def test_readers_of_the_directory_see_exactly_the_files_columns(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    import duckdb

    for index in range(2):  # two windows on two dates: two date directories
        window = hours(24 * index, 24 * index + 1)
        archive.write_window("cpu", window, [shadowing(window)])
    expected = ["time", "date", "measurement", "v"]
    values = {("1999-12-31", "inner", 1.5), ("yesterday", "outer", 2.5)}

    # pandas.read_parquet(directory) is pyarrow.parquet.read_table(directory) underneath.
    for table in (
        pq.read_table(store.root),
        ds.dataset(store.root, format="parquet", partitioning="hive").to_table(),
    ):
        assert table.column_names == expected
        assert table.num_rows == 4
        assert set(zip(*(table.column(n).to_pylist() for n in expected[1:]), strict=True)) == values

    glob = f"{store.root}/**/*.parquet"
    with duckdb.connect() as connection:
        found = connection.execute(f"SELECT * FROM read_parquet('{glob}')")
        assert [column[0] for column in found.description or ()] == expected
        assert {row[1:] for row in found.fetchall()} == values


# ---------------------------------------------------------------------------------------------
# Names of any length


def long_names() -> list[str]:
    # 300 bytes of UTF-8, and two names alike in their first 250 bytes.
    return ["ü" * 100 + "/x" * 50, "y" * 250 + "/a", "y" * 250 + "/b"]


@pytest.mark.usefixtures("duckdb_available")
def test_a_300_byte_measurement_name_is_archived_listed_read_and_queried(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    names = long_names()
    assert [len(name.encode()) for name in names] == [300, 252, 252]
    window = hours(0, 1)
    for value, name in enumerate(names):
        archive.write_window(name, window, [points(window, 3 + value, v=value)])

    keys = [info.key for info in store.list_prefix()]
    assert len(keys) == 6
    assert max(len(part.encode()) for key in keys for part in key.split("/")) < 128
    assert archive.measurements() == sorted(names)
    for value, name in enumerate(names):
        assert [row["v"] for row in read_all(archive, window, name)] == [value] * (3 + value)
        [manifest] = archive.manifests(measurement=name)
        assert manifest == archive.manifest(name, window)
        assert manifest.measurement == name
        metadata = pq.read_schema(store.uri(manifest.files[0].path)).metadata
        assert metadata[b"tierflow.measurement"].decode() == name
        count = archive.query(f'SELECT count(*), min(v) FROM "{name}"')
        assert count.rows == [(3 + value, value)]
    assert [m.measurement for m in archive.manifests()] == sorted(names)
    assert {batch.measurement for batch in archive.read(window.start, window.stop)} == set(names)
    labelled = archive.query("SELECT measurement, count(*) FROM points GROUP BY ALL ORDER BY 1")
    assert labelled.rows == sorted((name, 3 + value) for value, name in enumerate(names))
    assert archive.verify() == []


def test_names_starting_with_a_dot_or_underscore_are_stored_visibly(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    names = [".", "..", "_internal", "~tilde"]
    for name in names:
        archive.write_window(name, window, [points(window, 2, v=1)])
    assert archive.measurements() == sorted(names)
    assert all(len(read_all(archive, window, name)) == 2 for name in names)
    # pyarrow.dataset skips names starting with `.` or `_`; none of the data is hidden from it.
    assert pq.read_table(store.root).num_rows == 2 * len(names)


# ---------------------------------------------------------------------------------------------
# Archives of the layout before `m/`


def _stamps(window: Window) -> str:
    return f"{window.start:%Y%m%dT%H%M%SZ}_{window.stop:%Y%m%dT%H%M%SZ}"


def old_layout_window(
    archive: ParquetArchive, store: LocalObjectStore, measurement: str, window: Window, **v: Any
) -> tuple[str, list[str]]:
    """Archive one window where the code before `m/` put it; its manifest key and file keys."""
    written = archive.write_window(measurement, window, [points(window, 4, **v)])
    name, day = quote(measurement, safe=""), f"{window.start:%Y-%m-%d}"
    document = json.loads(store.get_bytes(written.key))
    files = []
    for entry in document["files"]:
        old = f"measurement={name}/date={day}/{_stamps(window)}-{entry['sha256'][:16]}.parquet"
        store.put_file(old, Path(store.uri(entry["path"])))
        store.delete(entry["path"])
        entry["path"] = old
        files.append(old)
    key = f"_manifests/measurement={name}/{_stamps(window)}.json"
    store.put_bytes(key, json.dumps(document).encode())
    store.delete(written.key)
    return key, files


def _keys(store: LocalObjectStore) -> list[str]:
    return [info.key for info in store.list_prefix()]


@pytest.mark.usefixtures("duckdb_available")
def test_an_old_layout_archive_is_read_listed_queried_and_verified(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    made = {}
    for measurement in ("cpu load", "mem"):
        for index in (0, 1):
            window = hours(index, index + 1)
            made[measurement, index] = old_layout_window(
                archive, store, measurement, window, v=index
            )
    assert all(key.startswith(("measurement=", "_manifests/measurement=")) for key in _keys(store))

    assert archive.measurements() == ["cpu load", "mem"]
    listed = [(m.measurement, m.window, m.key) for m in archive.manifests()]
    assert listed == [
        (measurement, hours(index, index + 1), made[measurement, index][0])
        for index in (0, 1)
        for measurement in ("cpu load", "mem")
    ]
    window = hours(0, 1)
    manifest = archive.manifest("cpu load", window)
    assert manifest is not None
    assert [f.path for f in manifest.files] == made["cpu load", 0][1]
    assert [row["v"] for row in read_all(archive, hours(0, 2), "cpu load")] == [0] * 4 + [1] * 4
    result = archive.query("SELECT measurement, sum(v) FROM points GROUP BY ALL ORDER BY 1")
    assert result.rows == [("cpu load", 4), ("mem", 4)]
    assert archive.query('SELECT * FROM "cpu load" LIMIT 0').columns == ("time", "v")
    assert archive.verify() == []


class Recording(LocalObjectStore):
    """A local store that records every put and delete, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.log: list[tuple[str, str]] = []

    def put_file(self, key: str, source: Path) -> None:
        self.log.append(("put", key))
        super().put_file(key, source)

    def put_stream(self, key: str, chunks: Any) -> None:
        self.log.append(("put", key))
        super().put_stream(key, chunks)

    def delete(self, key: str) -> None:
        self.log.append(("delete", key))
        super().delete(key)


def test_archiving_an_old_layout_window_again_commits_then_removes_the_old_one(
    tmp_path: Path,
) -> None:
    store = Recording(tmp_path / "archive")
    archive = ParquetArchive(store, staging_dir=tmp_path / "staging")
    first, second = hours(0, 1), hours(1, 2)
    old_key, old_files = old_layout_window(archive, store, "cpu", first, v=1)
    kept_key, kept_files = old_layout_window(archive, store, "cpu", second, v=2)

    store.log.clear()
    new = archive.write_window("cpu", first, [points(first, 3, v=7)])
    steps = [entry for entry in store.log if entry[1] in {new.key, old_key, *old_files}]
    assert steps == [("put", new.key), ("delete", old_key), *(("delete", f) for f in old_files)]
    assert sorted(_keys(store)) == sorted([new.key, new.files[0].path, kept_key, *kept_files])
    assert [m.key for m in archive.manifests(measurement="cpu")] == [new.key, kept_key]
    assert [row["v"] for row in read_all(archive, hours(0, 2), "cpu")] == [7] * 3 + [2] * 4
    assert archive.measurements() == ["cpu"]
    assert archive.verify() == []


@pytest.mark.usefixtures("duckdb_available")
def test_of_a_windows_two_manifests_the_new_one_is_read_and_the_old_one_reported(
    archive: ParquetArchive, store: LocalObjectStore
) -> None:
    window = hours(0, 1)
    old_key, old_files = old_layout_window(archive, store, "cpu", window, v=1)
    saved = {key: store.get_bytes(key) for key in [old_key, *old_files]}
    new = archive.write_window("cpu", window, [points(window, 3, v=7)])
    for key, data in saved.items():  # as if the removal of the old ones had crashed
        store.put_bytes(key, data)

    assert [m.key for m in archive.manifests()] == [new.key]
    assert [m.key for m in archive.manifests(measurement="cpu")] == [new.key]
    assert archive.manifest("cpu", window) == new
    assert [row["v"] for row in read_all(archive, window)] == [7] * 3
    assert archive.measurements() == ["cpu"]
    assert archive.query("SELECT count(*), sum(v) FROM points").rows == [(3, 21)]
    problems = [(p.path, p.kind) for p in archive.verify()]
    assert sorted(problems) == sorted(
        [(old_key, ProblemKind.ORPHAN), *((f, ProblemKind.ORPHAN) for f in old_files)]
    )


# ---------------------------------------------------------------------------------------------
# Orphans


def test_verify_reports_a_file_no_manifest_names(
    archive: ParquetArchive, store: LocalObjectStore, tmp_path: Path
) -> None:
    from tierflow._cli import app

    window = hours(0, 1)
    manifest = archive.write_window("cpu", window, [points(window, 5, v=1)])
    assert archive.verify() == []
    # What a crashed run leaves: a whole file under its window's prefix, never committed.
    orphan = manifest.files[0].path.replace(manifest.files[0].sha256[:16], "0" * 16)
    store.put_file(orphan, Path(store.uri(manifest.files[0].path)))
    stray = "m/elsewhere/notes.parquet"
    store.put_bytes(stray, b"anything")
    assert data_keys(store) == sorted([manifest.files[0].path, orphan, stray])

    problems = archive.verify()
    assert [(p.path, p.kind) for p in problems] == [
        (orphan, ProblemKind.ORPHAN),
        (stray, ProblemKind.ORPHAN),
    ]
    assert str(problems[0]) == f"{orphan}: orphan: stored, but no manifest names it"

    config = tmp_path / "tierflow.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[tiers.cold]\narchive = "{store.root}"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["archive", "verify", "cold", "-c", str(config), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["problems"] == [str(p) for p in problems]
