"""Restore writes every string the dest accepts, and what the dest refuses fails only its own
measurement: on the real influxd, through the `tierflow` command, checked against the source's
own `SELECT *` (JSON) and the server's answers, never against tierflow's."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.integration.conftest import field_types, read_tier
from tests.integration.test_archive_restore import EVERY, config, tierflow
from tierflow._archive import PointBatch
from tierflow._config import InfluxDB1Connection
from tierflow._engines import InfluxQLEngine
from tierflow._transfer import WriteRefusedError, write_batches
from tierflow.testing import ThrowawayInfluxd

# The strings 1.x stores that a careless encoder breaks: newlines, carriage returns (alone and
# before a newline), the two escaped characters, a backslash right before the closing quote.
TEXTS = ["one\ntwo", "\r\n", "cr\r", "\n", 'say "hi"\n', "c:\\dir\\", "\\\n\\", '\\"', "plain"]


def lp_string(text: str) -> str:
    """A string field value spelled by hand from the 1.x rules (models/points.go)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def iso(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{ns % 10**9:09d}Z" if ns % 10**9 else f"{moment}Z"


def test_restore_writes_multiline_strings_and_fails_only_the_refused_measurement(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    base = int(start.timestamp()) * 10**9
    rng = random.Random(5)
    lines = []
    for i in range(600):
        at = base + rng.randrange(0, 3 * 3600 * 10**9)
        fields = f"note={lp_string(rng.choice(TEXTS))},n={i}i"
        lines.append(f"notes,host=h{i % 3} {fields} {at}")
    # `a_count` is an integer here and already a float in the dest: the dest refuses it.
    counts = sorted(base + rng.randrange(0, 3 * 3600 * 10**9) for _ in range(50))
    lines += [f"a_count,host=h1 v={i}i {at}" for i, at in enumerate(counts)]
    influxd.write_body("".join(line + "\n" for line in lines).encode(), db=db)
    path = config(tmp_path, influxd.url, db, start)
    path.write_text(
        path.read_text().replace('["sensor", "other"]', '["notes", "a_count"]'), encoding="utf-8"
    )
    ran = tierflow("run-once", "--now", (start + 3 * EVERY).isoformat(), "--json", config=path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    influxd.write_body(f"a_count,host=h1 v=0.5 {counts[-1] + 1}\n".encode(), db=db, rp="warm")

    args = ["--from", start.isoformat(), "--to", (start + 3 * EVERY).isoformat()]
    restored = tierflow("restore", "cold", *args, "--into", "restored", config=path)

    source = read_tier(influxd, db, "autogen")
    notes = {key: value for key, value in source.items() if key[0] == "notes"}
    assert any("\n" in fields["note"] for fields in notes.values())
    warm = read_tier(influxd, db, "warm")
    assert {key: value for key, value in warm.items() if key[0] == "notes"} == notes
    assert field_types(influxd, db, "warm", "notes") == {"n": "integer", "note": "string"}
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert "Traceback" not in restored.stderr
    assert f"restored {len(notes)} points" in restored.stdout
    (failure,) = restored.stderr.strip().splitlines()
    assert failure.startswith("error: not restored: measurement 'a_count', field 'v', ")
    assert f"first offending point at {iso(counts[0])}: " in failure
    assert "field type conflict" in failure
    # The dest kept its float; none of the archive's integers reached it.
    assert field_types(influxd, db, "warm", "a_count") == {"v": "float"}

    again = tierflow("restore", "cold", *args, "--into", "restored", "--json", config=path)
    assert again.returncode == 1, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert report["points"] == len(notes)
    ((entry),) = report["failures"]
    assert (entry["measurement"], entry["column"], entry["time"]) == (
        "a_count",
        "v",
        iso(counts[0]),
    )


async def test_a_name_line_protocol_cannot_carry_fails_its_measurement_alone(
    influxd: ThrowawayInfluxd, db: str
) -> None:
    """An archive can hold what InfluxDB never stores (a newline in a tag value, from another
    tool's Parquet): the encoder refuses it, naming the tag and the point, and the rest is
    written; without `isolate` (relays) the same refusal raises."""
    good = PointBatch(
        pa.record_batch({"time": pa.array([10, 20], pa.int64()), "s": ["a\nb", "\r"]})
    )
    bad = PointBatch(
        pa.record_batch(
            {
                "time": pa.array([1, 2, 3], pa.int64()),
                "k": [None, "x\ny", "z"],
                "v": [1.0, 2.0, 3.0],
            }
        ),
        frozenset({"k"}),
    )

    async def batches() -> AsyncIterator[tuple[str, PointBatch]]:
        yield "bad", bad
        yield "good", good

    engine = InfluxQLEngine(
        "plant", InfluxDB1Connection.model_validate({"kind": "influxdb1", "url": influxd.url})
    )
    try:
        moved = await write_batches(
            engine, batches(), database=db, retention_policy=None, max_concurrency=2, isolate=True
        )
        with pytest.raises(WriteRefusedError, match="measurement 'bad', tag 'k'"):
            await write_batches(
                engine, batches(), database=db, retention_policy=None, max_concurrency=2
            )
    finally:
        await engine.aclose()
    (failure,) = moved.failures
    assert (failure.measurement, failure.column, failure.time_ns) == ("bad", "k", 2)
    assert str(failure).startswith(
        "measurement 'bad', tag 'k', first offending point at 1970-01-01T00:00:00.000000002Z: "
    )
    assert moved.points == 2
    assert read_tier(influxd, db, "autogen") == {
        ("good", 10, frozenset()): {"s": "a\nb"},
        ("good", 20, frozenset()): {"s": "\r"},
    }
