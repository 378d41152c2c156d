"""Every shape InfluxDB 1.x accepts comes back exactly: archive (Parquet) and restore, on a real
influxd, for the edges that CSV and one-type-per-column lose.

The oracle is what the test itself wrote: each point below is written as raw line protocol,
escaped here by hand, and its values are compared with what lands in the Parquet files (read
with pyarrow, column by column, typed by the Parquet schema) bit for bit, type for type.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    base = int(start.timestamp()) * 10**9
    influxd.execute(
        f'CREATE RETENTION POLICY "short" ON "{db}" DURATION INF REPLICATION 1 SHARD DURATION 1h'
    )
    influxd.write([line(shape, base) for shape in SHAPES], db=db, rp="short")
    config = tmp_path / "tierflow.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{tmp_path / "state.db"}"
[connections.plant]
kind = "influxdb1"
url = "{influxd.url}"
[tiers.hot]
connection = "plant"
bucket = "{db}/short"
[tiers.cold]
archive = "{tmp_path / "archive"}"
[jobs.to_cold]
kind = "archive"
source = "hot"
dest = "cold"
measurements = ["mixed", "strs", "keys", "dup"]
every = "2h"
start = "{start.isoformat()}"
""",
        encoding="utf-8",
    )
    now = (start + timedelta(hours=4)).isoformat()
    ran = tierflow("run-once", "--now", now, "--json", config=config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (json.loads(ran.stdout)["succeeded"], json.loads(ran.stdout)["failed"]) == (2, 0)

    assert parquet_points(tmp_path / "archive") == expected_points(base)
    # The window that holds only integers of a field that is a float elsewhere: int64, one column.
    (later,) = [
        p
        for p in (tmp_path / "archive").rglob("*.parquet")
        if pq.read_schema(p).metadata[b"tierflow.measurement"] == b"mixed"
        and pq.read_table(p).num_rows == 1
    ]
    assert pq.read_schema(later).field("v").type == pa.int64()
