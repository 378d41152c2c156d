"""The 3.x stand-in's checks against a *live* InfluxDB 3.x (Core or Enterprise). Runs only when
`TIERFLOW_TEST_INFLUXDB3_URL` and `TIERFLOW_TEST_INFLUXDB3_TOKEN` are set (an admin token:
databases are created and deleted here); otherwise every case is skipped, saying so. No 3.x
server can be installed on the machines that run CI, so this suite has not run there.

It holds a real server to what the stand-in is trusted for:
- the documented API checks (`_influx3_checks.SHARED`: formats and column types, refusals and
  their bodies, `information_schema`, overwrites, precisions, `configure/database`, auth, and
  answers a real server gave in InfluxData's own test suite);
- the stand-in's line protocol parser (a port of 3.x's crate): every body of the parser tests
  (agreed with influxd 1.x, refused, and where 1.x and 3.x differ) written to the live server,
  what it stores compared with what the port stores;
- DataFusion's SQL aggregates on the live server against influxd 1.x's InfluxQL over the same
  points.

tierflow itself runs against the same live server in the `live`/`influxdb3` cases of
`test_engine_contract.py`, `test_sql_downsample.py` and `test_influx3_transfers.py`
(`_influx3_servers.py`; README, "The live 3.x suite").
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from tests.influx3_standin import Influx3StandIn
from tests.integration import _influx3_checks as checks
from tests.integration.conftest import TierData
from tests.integration.test_influx3_standin import (
    AGREED,
    DIVERGENT,
    KINDS,
    REFUSED,
    quoted,
    same_points,
    standin_tier,
)
from tierflow.testing import ThrowawayInfluxd

LIVE_ENV = ("TIERFLOW_TEST_INFLUXDB3_URL", "TIERFLOW_TEST_INFLUXDB3_TOKEN")
NS = 1_000_000_000


class Live:
    """The live server and the databases made on it, deleted afterwards."""

    def __init__(self, client: checks.Client) -> None:
        self.client = client
        self.made: list[str] = []

    def database(self) -> str:
        name = f"tierflow_test_{uuid.uuid4().hex[:12]}"
        self.made.append(name)
        return name

    def drop_all(self) -> None:
        for name in self.made:
            self.client.delete_database(name)


@pytest.fixture
def live() -> Iterator[Live]:
    missing = [name for name in LIVE_ENV if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live InfluxDB 3.x suite: set {', '.join(missing)} to run it")
    url, token = (os.environ[name] for name in LIVE_ENV)
    server = Live(checks.Client(url, token))
    try:
        yield server
    finally:
        server.drop_all()


@pytest.mark.parametrize("check", checks.SHARED, ids=lambda c: c.__name__)
def test_documented_api(live: Live, check: Callable[[checks.Client, str], None]) -> None:
    check(live.client, live.database())


def live_tier(client: checks.Client, db: str) -> TierData:
    """What the live server holds, in `read_tier`'s shape (Parquet answers: exact types)."""
    columns = client.rows(
        db,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'iox'",
    )
    data: TierData = {}
    for table_name in {c["table_name"] for c in columns}:
        kinds = {c["column_name"]: c["data_type"] for c in columns if c["table_name"] == table_name}
        tags = [n for n, t in kinds.items() if t.startswith("Dictionary")]
        fields = [n for n, t in kinds.items() if t in KINDS]
        answer = client.query(db, f"SELECT * FROM {quoted(table_name)}", "parquet")
        assert answer.status == 200, answer
        table = answer.table()
        times = table.column("time").cast(pa.int64()).to_pylist()
        for row, time in zip(table.drop_columns(["time"]).to_pylist(), times, strict=True):
            key = (table_name, time, frozenset((k, row[k]) for k in tags if row[k] is not None))
            data[key] = {k: row[k] for k in fields if row[k] is not None}
    return data


@pytest.mark.parametrize(
    "body", [*AGREED, *REFUSED, *(case[0] for case in DIVERGENT), "m v=1 ", "m v=1,v=2 1"]
)
def test_live_parser_matches_the_port(live: Live, body: str) -> None:
    db = live.database()
    standin = Influx3StandIn()
    try:
        standin.write("lp", body)
        ours: TierData | None = standin_tier(standin, "lp")[0]
    except ValueError:
        ours = None
    answer = live.client.write(db, body, accept_partial="false")
    if ours is None:
        assert answer.status == 400, answer
        return
    assert answer.status == 204, answer
    theirs = live_tier(live.client, db)
    assert same_points(ours, theirs), (ours, theirs)


def test_live_sql_aggregates_equal_influxql(live: Live, influxd: ThrowawayInfluxd, db: str) -> None:
    start = 1_700_000_000 * NS // (3600 * NS) * (3600 * NS)
    lines = [
        f"m,host={host} v={(i * 7919 % 1000) / 8 - 50!r},n={i * 31 - 900}i {start + i * 97 * NS}"
        for host in ("a", "b")
        for i in range(300)
    ]
    body = "\n".join(lines)
    influxd.write_body(body.encode(), db=db, precision="ns")
    target = live.database()
    assert live.client.write(target, body).status == 204
    low, high = start, start + 8 * 3600 * NS
    theirs = influxd.series_points(
        "SELECT mean(v), min(v), max(v), count(v), sum(v), sum(n) FROM m "
        f"WHERE time >= {low} AND time < {high} GROUP BY time(1h, 30m), host",
        db=db,
    )
    answer = live.client.query(
        target,
        "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMP '1970-01-01T00:30:00') AS time, "
        "host, avg(v) AS mean, min(v) AS min, max(v) AS max, count(v) AS count, sum(v) AS sum, "
        "sum(n) AS sum_1 FROM m "
        f"WHERE time >= to_timestamp_nanos({low}) AND time < to_timestamp_nanos({high}) "
        "GROUP BY 1, 2 ORDER BY 2, 1",
        "parquet",
    )
    assert answer.status == 200, answer
    table = answer.table()
    got = [
        {**row, "time": t, "host": str(row["host"])}
        for row, t in zip(
            table.drop_columns(["time"]).to_pylist(),
            table.column("time").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]
    expected = sorted((r for r in theirs if r["count"]), key=lambda r: (r["host"], r["time"]))
    assert [(r["host"], r["time"]) for r in got] == [(r["host"], r["time"]) for r in expected]
    for mine, real in zip(got, expected, strict=True):
        assert (mine["count"], mine["min"], mine["max"], mine["sum_1"]) == (
            real["count"],
            real["min"],
            real["max"],
            real["sum_1"],
        )
        for name in ("mean", "sum"):
            assert math.isclose(mine[name], real[name], rel_tol=1e-12), name
