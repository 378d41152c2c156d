"""The object-store contract, run against the local store and S3; and the archive over S3.

moto's S3 server (`moto[server]`, started once for the session on a free local port) stands in
for S3: it speaks S3's HTTP API, so s3fs and botocore run for real, but it is not AWS. The tests
create the bucket and tamper with objects through boto3, independently of the code under test.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tierflow._archive import (
    ArchiveError,
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ParquetArchive,
    Point,
    PointBatch,
    ProblemKind,
    S3ObjectStore,
    open_archive,
    open_object_store,
)
from tierflow._windows import EPOCH, Window

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")
pytest.importorskip("s3fs", reason="the S3 tests need s3fs (archive-s3 extra)")

from moto.server import ThreadedMotoServer  # type: ignore[import-untyped, unused-ignore]

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
BUCKET = "tierflow-archive"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server for the session, with an empty bucket."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        _boto(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _boto(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped, unused-ignore]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": s3_endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }


@pytest.fixture
def s3_url() -> str:
    """A fresh prefix in the bucket per test."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_url: str, s3_options: dict[str, Any]
) -> Iterator[ObjectStore]:
    made = (
        open_object_store(str(tmp_path / "store"))
        if request.param == "local"
        else open_object_store(s3_url, storage_options=s3_options)
    )
    with made:
        yield made


# ---------------------------------------------------------------------------------------------
# The ObjectStore contract (see `tierflow._archive._store.ObjectStore`)


def test_put_and_get_each_way(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    store.put_file("a/file.bin", source)
    store.put_bytes("a/bytes.bin", b"bytes")
    store.put_stream("a/stream.bin", (bytes([i]) * 1000 for i in range(10)))

    assert store.get_bytes("a/file.bin") == source.read_bytes()
    assert source.exists()
    assert store.get_bytes("a/bytes.bin") == b"bytes"
    assert store.get_bytes("a/stream.bin") == b"".join(bytes([i]) * 1000 for i in range(10))
    assert store.size("a/file.bin") == 256 * 4096


def test_a_put_replaces(store: ObjectStore) -> None:
    store.put_bytes("k", b"old")
    store.put_bytes("k", b"new, longer")
    assert store.get_bytes("k") == b"new, longer"
    assert store.size("k") == len(b"new, longer")


def test_a_failed_stream_stores_nothing_and_keeps_the_previous_object(store: ObjectStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        store.put_stream("fresh", chunks())
    assert not store.exists("fresh")
    store.put_bytes("kept", b"previous")
    with pytest.raises(RuntimeError):
        store.put_stream("kept", chunks())
    assert store.get_bytes("kept") == b"previous"
    assert [info.key for info in store.list_prefix()] == ["kept"]


def test_open_gives_a_seekable_file(store: ObjectStore) -> None:
    store.put_bytes("x/y", b"0123456789")
    with store.open("x/y") as file:
        file.seek(6)
        assert file.read(2) == b"67"
        file.seek(0)
        assert file.read() == b"0123456789"


def test_list_is_by_string_prefix_in_key_order(store: ObjectStore) -> None:
    for key in ("b/2", "a/b/c", "a/bc", "a-b", "b/10", "a/b/d/e"):
        store.put_bytes(key, key.encode())
    assert list(store.list_prefix("a/b")) == [
        ObjectInfo("a/b/c", 5),
        ObjectInfo("a/b/d/e", 7),
        ObjectInfo("a/bc", 4),
    ]
    assert [info.key for info in store.list_prefix("a/b/")] == ["a/b/c", "a/b/d/e"]
    assert [info.key for info in store.list_prefix()] == [
        "a-b",
        "a/b/c",
        "a/b/d/e",
        "a/bc",
        "b/10",
        "b/2",
    ]
    assert list(store.list_prefix("nothing/here")) == []


def test_missing_objects(store: ObjectStore) -> None:
    store.put_bytes("dir/file", b"x")
    assert not store.exists("missing")
    assert not store.exists("dir")  # a "directory" is no object
    with pytest.raises(ObjectNotFoundError):
        store.open("missing")
    with pytest.raises(ObjectNotFoundError):
        store.size("missing")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("missing")
    store.delete("missing")  # no error


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("a/1", b"1")
    store.put_bytes("a/2", b"2")
    store.delete("a/1")
    assert not store.exists("a/1")
    assert store.exists("a/2")
    assert [info.key for info in store.list_prefix("a/")] == ["a/2"]


def test_keys_are_checked(store: ObjectStore) -> None:
    for key in ("", "/abs", "a//b", "../x", ".tmp"):
        with pytest.raises(ArchiveError, match="invalid object key"):
            store.put_bytes(key, b"x")


def test_unusual_key_characters(store: ObjectStore) -> None:
    key = "measurement=cpu%20load%2Fü/date=2026-11-01/x y+z.parquet"
    store.put_bytes(key, b"ok")
    assert store.get_bytes(key) == b"ok"
    assert [info.key for info in store.list_prefix("measurement=cpu%20")] == [key]


def test_the_uri_names_the_object(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"x")
    uri = store.uri("a/b")
    if isinstance(store, S3ObjectStore):
        assert uri == f"{store.url}/a/b"
    else:
        assert isinstance(store, LocalObjectStore)
        assert Path(uri).read_bytes() == b"x"


# ---------------------------------------------------------------------------------------------
# S3 specifics


def test_an_unreachable_endpoint_is_an_archive_error(s3_url: str) -> None:
    store = open_object_store(
        s3_url,
        storage_options={
            "endpoint_url": "http://127.0.0.1:9",  # discard port: nothing listens
            "key": "k",
            "secret": "s",
            "client_kwargs": {"region_name": "us-east-1"},
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        },
    )
    with pytest.raises(ArchiveError) as caught:
        store.put_bytes("a", b"x")
    assert not isinstance(caught.value, ObjectNotFoundError)


def test_a_missing_bucket_is_an_archive_error(s3_options: dict[str, Any]) -> None:
    store = open_object_store("s3://no-such-bucket-here/x", storage_options=s3_options)
    with pytest.raises(ArchiveError):
        store.put_bytes("a", b"x")


# ---------------------------------------------------------------------------------------------
# The archive over S3


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def hourly(index: int, count: int, value: float) -> tuple[Window, PointBatch]:
    window = Window(T0 + index * HOUR, T0 + (index + 1) * HOUR)
    step = HOUR // count
    made = [
        Point(ns(window.start + i * step), {"host": f"h{i % 3}"}, {"v": value, "n": i})
        for i in range(count)
    ]
    return window, PointBatch.from_points(made)


@pytest.fixture
def s3_archive(s3_url: str, s3_options: dict[str, Any], tmp_path: Path) -> ParquetArchive:
    return open_archive(s3_url, storage_options=s3_options, staging_dir=tmp_path)


def test_the_archive_round_trips_on_s3(s3_archive: ParquetArchive, s3_endpoint: str) -> None:
    windows = []
    for index in (23, 24, 25):  # across midnight
        window, points = hourly(index, 100, value=index / 2)
        s3_archive.write_window("cpu", window, [points])
        windows.append(window)

    found = list(s3_archive.read(windows[0].start + 30 * timedelta(minutes=1), windows[2].start))
    assert [b.window for b in found] == windows[:2]
    assert sum(b.points.num_rows for b in found) == 150
    assert {b.path.split("/")[2] for b in found} == {"2026-11-01", "2026-11-02"}
    assert s3_archive.verify() == []

    prefix = s3_archive.store.url.removeprefix(f"s3://{BUCKET}/")
    listed = _boto(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    assert len([o for o in listed if o["Key"].endswith(".parquet")]) == 3
    assert len([o for o in listed if o["Key"].endswith(".json")]) == 3


def test_a_re_run_on_s3_replaces_and_removes_the_old_object(s3_archive: ParquetArchive) -> None:
    window, first = hourly(0, 10, value=1.0)
    old = s3_archive.write_window("m", window, [first])
    _, second = hourly(0, 20, value=2.0)
    new = s3_archive.write_window("m", window, [second])
    store = s3_archive.store
    assert not store.exists(old.files[0].path)
    assert [i.key for i in store.list_prefix("m/")] == [new.files[0].path]
    assert sum(b.points.num_rows for b in s3_archive.read(window.start, window.stop)) == 20


def test_a_failure_mid_write_on_s3_leaves_nothing(s3_archive: ParquetArchive) -> None:
    window, points = hourly(0, 10, value=1.0)

    def source() -> Iterator[PointBatch]:
        yield points
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        s3_archive.write_window("m", window, source())
    assert list(s3_archive.store.list_prefix()) == []


def test_verify_on_s3_finds_tampering(s3_archive: ParquetArchive, s3_endpoint: str) -> None:
    manifests = []
    for index in range(3):
        window, points = hourly(index, 10, value=index)
        manifests.append(s3_archive.write_window("m", window, [points]))
    root = s3_archive.store.url.removeprefix(f"s3://{BUCKET}/")
    boto = _boto(s3_endpoint)
    deleted, corrupted = manifests[0].files[0].path, manifests[1].files[0].path
    boto.delete_object(Bucket=BUCKET, Key=f"{root}/{deleted}")
    body = bytearray(boto.get_object(Bucket=BUCKET, Key=f"{root}/{corrupted}")["Body"].read())
    body[100] ^= 0xFF
    boto.put_object(Bucket=BUCKET, Key=f"{root}/{corrupted}", Body=bytes(body))

    problems = {(p.path, p.kind) for p in s3_archive.verify()}
    assert problems == {
        (deleted, ProblemKind.MISSING),
        (corrupted, ProblemKind.CHECKSUM_MISMATCH),
    }


def test_sql_over_the_archive_on_s3(s3_archive: ParquetArchive) -> None:
    pytest.importorskip("duckdb", reason="DuckDB (the archive-query extra) is not installed")
    for index in range(2):
        window, points = hourly(index, 30, value=index)
        s3_archive.write_window("cpu load", window, [points])
    result = s3_archive.query(
        'SELECT host, count(*), sum(v) FROM "cpu load" GROUP BY host ORDER BY host'
    )
    assert result.rows == [("h0", 20, 10.0), ("h1", 20, 10.0), ("h2", 20, 10.0)]
