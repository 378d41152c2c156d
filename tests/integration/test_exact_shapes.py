"""Every shape InfluxDB 1.x accepts comes back exactly: archive (Parquet) and restore, on a real
influxd, for the edges that CSV and one-type-per-column lose.

Two oracles, neither computed by tierflow: what the test itself wrote (each point below is
written as raw line protocol, escaped here by hand) and what the server holds on disk
(`tests.tsm_oracle`, InfluxDB's own TSM reader). The Parquet files are read here with pyarrow,
column by column, typed by the Parquet schema; the restored database is read off the disk.
Values are compared bit for bit, type for type.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration._helpers import archive_config
from tests.tsm_oracle import StoredPoint, stored_points
from tierflow._archiving import Archives, archive_window, restore
from tierflow._config import ArchiveJob, parse_config
from tierflow._engines import engine_for
from tierflow._windows import Window
from tierflow.testing import ThrowawayInfluxd

TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
HOUR = 3600 * 10**9

# (measurement, tags, fields as {key: (type, value)}, hour, second)
Shape = tuple[str, dict[str, str], dict[str, tuple[str, Any]], int, int]
SHAPES: list[Shape] = [
    # A field that is an integer in one shard and a float in the next (1-hour shards): each
    # value keeps its type; 2**53 + 1 is not rounded; -0.0 and the smallest subnormal keep bits.
    ("mixed", {}, {"v": ("integer", 2**53 + 1)}, 0, 1),
    ("mixed", {}, {"v": ("integer", -5)}, 0, 2),
    ("mixed", {}, {"v": ("float", 0.5)}, 1, 1),
    ("mixed", {}, {"v": ("float", -0.0)}, 1, 2),
    ("mixed", {}, {"v": ("float", 5e-324)}, 1, 3),
    # A window that holds only integers stays integer, though the field is a float elsewhere.
    ("mixed", {}, {"v": ("integer", 7)}, 2, 1),
    # Strings: empty, multi-line, quotes and backslashes; a point without the string field.
    ("strs", {"t": "a"}, {"s": ("string", ""), "n": ("integer", 1)}, 0, 1),
    ("strs", {"t": "a"}, {"s": ("string", "line1\nline2\r\nend")}, 0, 2),
    ("strs", {"t": "a"}, {"s": ("string", 'quote " and backslash \\')}, 0, 3),
    ("strs", {"t": "a"}, {"n": ("integer", 2)}, 0, 4),
    # Keys that need CSV quoting: a comma, a space, a double quote, a leading space.
    (
        "keys",
        {"a,b": "1", "sp ace": "x y"},
        {'f"q': ("float", 1.5), " lead": ("integer", 2), "b": ("boolean", True)},
        0,
        1,
    ),
    # A tag and a field of one name.
    ("dup", {"x": "tag0"}, {"x": ("float", 1.5)}, 0, 1),
    ("dup", {}, {"x": ("float", 2.5)}, 0, 2),
]


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def _value(kind: str, value: Any) -> str:
    if kind == "integer":
        return f"{value}i"
    if kind == "float":
        return repr(float(value))
    if kind == "boolean":
        return "true" if value else "false"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(shape: Shape, base: int) -> str:
    measurement, tags, fields, hour, second = shape
    key = _escape(measurement, ", ")
    key += "".join(f",{_escape(k, ', =')}={_escape(v, ', =')}" for k, v in sorted(tags.items()))
    values = ",".join(f"{_escape(k, ', =')}={_value(*v)}" for k, v in fields.items())
    return f"{key} {values} {base + hour * HOUR + second * 10**9}"


def on_disk(points: list[StoredPoint]) -> set[tuple[Any, ...]]:
    """The oracle's values grouped into points, in the shape `parquet_points` gives."""
    grouped: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for point in points:
        kind = point.type
        grouped.setdefault((point.measurement, point.time, point.tags), []).append(
            (point.field, kind, _bits(kind, point.value))
        )
    return {(m, t, tags, tuple(sorted(f))) for (m, t, tags), f in grouped.items()}


def tierflow(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERFLOW, *args, "-c", str(config)], capture_output=True, text=True, check=False
    )


def _bits(kind: str, value: Any) -> Any:
    return struct.pack(">d", value) if kind == "float" else value


def expected_points(base: int) -> set[tuple[Any, ...]]:
    return {
        (
            measurement,
            base + hour * HOUR + second * 10**9,
            tuple(sorted(tags.items())),
            tuple(sorted((k, kind, _bits(kind, v)) for k, (kind, v) in fields.items())),
        )
        for measurement, tags, fields, hour, second in SHAPES
    }


_KINDS = {
    pa.float64(): "float",
    pa.int64(): "integer",
    pa.uint64(): "unsigned",
    pa.bool_(): "boolean",
    pa.string(): "string",
}


def parquet_points(root: Path) -> set[tuple[Any, ...]]:
    """Every point in the archive's Parquet files, read here column by column: a column's kind
    and InfluxDB key from its metadata, a field's type from its Parquet type."""
    found = set()
    for path in root.rglob("*.parquet"):
        table = pq.read_table(path)
        measurement = table.schema.metadata[b"tierflow.measurement"].decode()
        columns = []
        for field in table.schema:
            if field.name == "time":
                continue
            meta = field.metadata or {}
            kind = meta[b"tierflow.kind"].decode()
            value_type = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
            columns.append((field.name, kind, meta[b"tierflow.key"].decode(), _KINDS[value_type]))
        times = table.column("time").cast(pa.int64()).to_pylist()
        for row, time in enumerate(times):
            tags, fields = [], []
            for name, kind, key, value_type in columns:
                value = table.column(name)[row].as_py()
                if value is None:
                    continue
                if kind == "tag":
                    tags.append((key, value))
                else:
                    fields.append((key, value_type, _bits(value_type, value)))
            found.add((measurement, time, tuple(sorted(tags)), tuple(sorted(fields))))
    return found


def test_every_shape_is_archived_exactly(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path
) -> None:
    # On a 2-hour boundary (the job's windows are epoch-aligned), some hours back.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    start = hour - timedelta(hours=hour.hour % 2)
    base = int(start.timestamp()) * 10**9
    influxd.execute(
        f'CREATE RETENTION POLICY "short" ON "{db}" DURATION INF REPLICATION 1 SHARD DURATION 1h'
    )
    body = "\n".join(line(shape, base) for shape in SHAPES).encode()
    influxd.write_body(body, db=db, rp="short")
    influxd.execute(f'CREATE DATABASE "{db}_restored"')
    influxd.execute(
        f'CREATE RETENTION POLICY "short" ON "{db}_restored" DURATION INF REPLICATION 1 '
        "SHARD DURATION 1h"
    )
    source = on_disk(stored_points(influxd, db, "short"))
    assert source == expected_points(base)  # the server stored what the test wrote
    config = archive_config(
        tmp_path,
        influxd.url,
        f"{db}/short",
        ["mixed", "strs", "keys", "dup"],
        every="2h",
        start=start,
        restored=f"{db}_restored/short",
    )
    now = (start + timedelta(hours=4)).isoformat()
    ran = tierflow("run-once", "--now", now, "--json", config=config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (json.loads(ran.stdout)["succeeded"], json.loads(ran.stdout)["failed"]) == (2, 0)

    assert parquet_points(tmp_path / "archive") == source
    # The window that holds only integers of a field that is a float elsewhere: int64, one column.
    (later,) = [
        p
        for p in (tmp_path / "archive").rglob("*.parquet")
        if pq.read_schema(p).metadata[b"tierflow.measurement"] == b"mixed"
        and pq.read_table(p).num_rows == 1
    ]
    assert pq.read_schema(later).field("v").type == pa.int64()

    # Restored into a database of the same shard layout: what lands on disk is the source's.
    restored = tierflow(
        "restore", "cold", "--from", start.isoformat(), "--to", now, "--into", "restored",
        "--json", config=config,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert json.loads(restored.stdout)["points"] == len(SHAPES)
    assert on_disk(stored_points(influxd, f"{db}_restored", "short")) == source


# -- generated shapes --------------------------------------------------------------------------

# Names from a small pool, so that tags and fields share names now and then; each with a
# character line protocol must escape (or a quote, which it need not). Backslashes in names are
# the line-protocol round-trip test's business (tests/integration/test_lineprotocol_roundtrip.py).
_NAMES = ["a", "x y", "c,d", "e=f", 'q"t', " lead", "ü"]
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]),
)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": _FLOATS,
    "integer": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**53 + 1, -(2**53) - 1]),
    "boolean": st.booleans(),
    "string": st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
    | st.sampled_from(["", "\n", "\r\n", 'a"b\\c', "x\\"]),
}


@st.composite
def generated(draw: st.DrawFn) -> list[Shape]:
    """Points of two measurements over two one-hour shards: per shard each field has one type
    (a type may change at the shard boundary); tags and fields drawn from one pool of names."""
    shapes: list[Shape] = []
    for measurement in ("g 1", "g,2"):
        tag_keys = draw(st.lists(st.sampled_from(_NAMES), max_size=2, unique=True))
        field_keys = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True))
        for hour in (0, 1):
            types = {key: draw(st.sampled_from(sorted(_VALUES))) for key in field_keys}
            for second in draw(st.lists(st.integers(0, 3599), min_size=1, max_size=6, unique=True)):
                tags = {k: draw(st.sampled_from(["v", "w x", "y,z", "=", 'p"'])) for k in tag_keys}
                chosen = draw(st.lists(st.sampled_from(field_keys), min_size=1, unique=True))
                fields = {k: (types[k], draw(_VALUES[types[k]])) for k in chosen}
                shapes.append((measurement, tags, fields, hour, second))
    return shapes


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shapes=generated())
def test_generated_shapes_archive_and_restore_exactly(
    influxd: ThrowawayInfluxd, tmp_path_factory: pytest.TempPathFactory, shapes: list[Shape]
) -> None:
    """Archive a two-hour window over two one-hour shards and restore it into a database of
    the same layout, through tierflow's own code paths; the Parquet files and the restored
    database both equal what the source database holds on disk."""
    tmp_path = tmp_path_factory.mktemp("generated")
    source_db, restored_db = "gen_source", "gen_restored"
    for database in (source_db, restored_db):
        influxd.execute(f'DROP DATABASE "{database}"')
        influxd.execute(f'CREATE DATABASE "{database}"')
        influxd.execute(
            f'CREATE RETENTION POLICY "short" ON "{database}" DURATION INF REPLICATION 1 '
            "SHARD DURATION 1h DEFAULT"
        )
    start = datetime(2026, 11, 2, tzinfo=UTC)
    base = int(start.timestamp()) * 10**9
    influxd.write_body(
        "\n".join(line(shape, base) for shape in shapes).encode(), db=source_db, rp="short"
    )
    source = on_disk(stored_points(influxd, source_db, "short"))
    config = parse_config(
        {
            "connections": {"plant": {"kind": "influxdb1", "url": influxd.url}},
            "tiers": {
                "hot": {"connection": "plant", "bucket": f"{source_db}/short"},
                "restored": {"connection": "plant", "bucket": f"{restored_db}/short"},
                "cold": {"archive": str(tmp_path / "archive")},
            },
            "jobs": {
                "keep": {
                    "kind": "archive",
                    "source": "hot",
                    "dest": "cold",
                    "measurements": ["g 1", "g,2"],
                    "every": "2h",
                    "start": start,
                }
            },
        },
        tmp_path / "tierflow.toml",
    )
    window = Window(start, start + timedelta(hours=2))

    async def run() -> Any:
        engine = engine_for("plant", config.connections["plant"])
        try:
            archive = Archives(config)("cold")
            job = config.jobs["keep"]
            assert isinstance(job, ArchiveJob)
            await archive_window(engine, archive, job, config.tiers["hot"], window)
            return await restore(
                archive,
                engine,
                config.tiers["restored"],
                start=window.start,
                stop=window.stop,
                measurement=None,
                max_concurrency=4,
            )
        finally:
            await engine.aclose()

    moved = asyncio.run(run())
    assert moved.failures == ()
    assert parquet_points(tmp_path / "archive") == source
    assert on_disk(stored_points(influxd, restored_db, "short")) == source


def test_values_no_restore_could_write_back_are_archived_and_warned_about(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path
) -> None:
    """InfluxDB stores the tag value `a\\\\=b` (written `a\\\\\\=b`: it unescapes only the last
    pair), but line protocol cannot spell a backslash before `=` back: the archive keeps the
    value exactly and warns at archive time, naming measurement and tag."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    base = int(start.timestamp()) * 10**9
    influxd.write_body(b"odd,t=a\\\\\\=b v=1i " + str(base + 10**9).encode(), db=db)
    (stored,) = stored_points(influxd, db)
    assert stored.tags == (("t", "a\\\\=b"),)
    config = archive_config(tmp_path, influxd.url, db, ["odd"], every="1h", start=start)
    ran = tierflow("run-once", "--now", (start + timedelta(hours=1)).isoformat(), config=config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert parquet_points(tmp_path / "archive") == on_disk([stored])
    (warning,) = [
        json.loads(text) for text in ran.stderr.splitlines() if '"archive_unrestorable"' in text
    ]
    assert warning["measurement"] == "odd"
    assert "tag 't'" in warning["problems"][0]
