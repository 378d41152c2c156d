"""Cross-connection downsampling (a relay): the source server aggregates, tierflow carries the
rows to the dest connection and writes them. The oracle is the same job run on one connection
with SELECT … INTO (itself checked against aggregates computed in tests/test_downsample.py):
same points, same values, same field types — and against a few values computed here."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import Databases, field_types, read_tier
from tierflow._config import InfluxDB1Connection
from tierflow._engines import InfluxQLEngine, Series
from tierflow._errors import QueryError
from tierflow.testing import ThrowawayInfluxd

TIERFLOW = str(Path(sys.executable).parent / "tierflow")


def write(server: ThrowawayInfluxd, db: str, start: datetime) -> list[tuple[int, str, float, int]]:
    rng = random.Random(5)
    points = []
    for _ in range(2000):
        nanos = int(start.timestamp()) * 10**9 + rng.randrange(0, 2 * 3600 * 10**9)
        host = rng.choice(["a", "b c", "d,e"])
        points.append((nanos, host, rng.uniform(0, 9), rng.randint(0, 99)))
    escaped = {h: h.replace(" ", "\\ ").replace(",", "\\,") for h in ("a", "b c", "d,e")}
    server.write([f"m,host={escaped[h]} temp={t!r},n={n}i {ns}" for ns, h, t, n in points], db=db)
    return points


def config(tmp: Path, url: str, source_db: str, dest_db: str, start: datetime, relay: bool) -> Path:
    dest_connection = "remote" if relay else "plant"
    path = tmp / ("relay.toml" if relay else "local.toml")
    path.write_text(
        f"""
[state]
url = "sqlite:///{tmp / (path.stem + ".db")}"
[connections.plant]
kind = "influxdb1"
url = "{url}"
[connections.remote]
kind = "influxdb1"
url = "{url}"
[tiers.hot]
connection = "plant"
bucket = "{source_db}/autogen"
[tiers.warm]
connection = "{dest_connection}"
bucket = "{dest_db}/warm"
[jobs.down]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["m"]
every = "10m"
start = "{start.isoformat().replace("+00:00", "Z")}"
aggregates = {{ temp = ["mean", "max", "first"], n = ["sum", "count", "last", "spread"] }}
""",
        encoding="utf-8",
    )
    return path


def test_a_relay_writes_what_select_into_writes(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    source, local, remote = databases.new(), databases.new(), databases.new()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    points = write(influxd, source, start)
    now = (start + timedelta(hours=2)).isoformat()
    for relay, dest in ((False, local), (True, remote)):
        path = config(tmp_path, influxd.url, source, dest, start, relay)
        done = subprocess.run(
            [TIERFLOW, "run-once", "--now", now, "--json", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["succeeded"] == 12

    relayed, oracle = read_tier(influxd, remote, "warm"), read_tier(influxd, local, "warm")
    assert relayed.keys() == oracle.keys()
    assert relayed == oracle
    assert field_types(influxd, remote, "warm", "m") == field_types(influxd, local, "warm", "m")

    # And one window computed here, for host "b c": count and sum of n.
    first = int(start.timestamp()) * 10**9
    mine = [n for ns, h, _, n in points if h == "b c" and first <= ns < first + 600 * 10**9]
    key = ("m", first, frozenset({("host", "b c")}))
    assert relayed[key]["n_count"] == len(mine)
    assert relayed[key]["n_sum"] == sum(mine)


async def test_chunked_reads_give_exactly_the_rows_of_one_read(
    influxd: ThrowawayInfluxd, db: str
) -> None:
    """Relays read 1.x aggregates as chunked JSON, a chunk at a time: the same rows as one
    read, whatever the chunk size; a statement error in the stream raises."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    write(influxd, db, start)
    stop = start + timedelta(hours=2)
    text = (
        f'SELECT mean("temp") AS "temp_mean", count("n") AS "n_count" FROM "{db}".."m" '
        f"WHERE time >= {int(start.timestamp())}s AND time < {int(stop.timestamp())}s "
        "GROUP BY time(10m), *"
    )
    engine = InfluxQLEngine(
        "plant", InfluxDB1Connection.model_validate({"kind": "influxdb1", "url": influxd.url})
    )
    try:
        whole = await engine.query(text, database=db)
        chunks = [c async for c in engine.query_chunks(text, database=db, chunk_size=5)]
        with pytest.raises(QueryError, match="not found"):
            [c async for c in engine.query_chunks('SELECT * FROM "nosuch".."m"')]
    finally:
        await engine.aclose()

    def rows(series: list[Series]) -> list[tuple[object, ...]]:
        return sorted((tuple(sorted(s.tags.items())), *row) for s in series for row in s.values)

    assert len(chunks) >= 36 // 5 + 1  # 36 rows, at most 5 a chunk
    assert all(sum(len(s.values) for s in chunk) <= 5 for chunk in chunks)
    assert rows([s for chunk in chunks for s in chunk]) == rows(whole)
    assert len(rows(whole)) == 3 * 12  # three hosts, twelve 10-minute buckets
