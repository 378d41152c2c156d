"""The InfluxDB 3.x stand-in (`tests/influx3_standin.py`) against oracles it did not compute:
the real influxd 1.x (the line protocol parser, and InfluxQL aggregates over the same points as
the DataFusion SQL aggregates), hand-computed values, and the documented 3.x API (formats,
errors, auth, `configure/database`).
"""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.influx3_standin import ROTATED, TOKEN, Influx3StandIn


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def write(
    server: Influx3StandIn, db: str, body: str, token: str = TOKEN, **params: str
) -> tuple[int, str]:
    query = {"db": db, "precision": "nanosecond", **params}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/api/v3/write_lp", params=query, data=body.encode(), headers=bearer(token)
        ) as response,
    ):
        return response.status, await response.text()


async def query(
    server: Influx3StandIn, db: str, q: str, format: str = "json", token: str = TOKEN
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/api/v3/query_sql",
            json={"db": db, "q": q, "format": format},
            headers=bearer(token),
        ) as response,
    ):
        return response.status, await response.read()


async def rows(server: Influx3StandIn, db: str, q: str) -> list[dict[str, Any]]:
    status, body = await query(server, db, q, "jsonl")
    assert status == 200, body
    return [json.loads(line) for line in body.decode().splitlines()]


async def test_written_points_come_back_typed(influx3: Influx3StandIn) -> None:
    status, text = await write(
        influx3, "plant", 'cpu,host=a v=1,n=-5i,u=7u,ok=t,s="x" 1000000000\n'
    )
    assert (status, text) == (204, "")
    assert await rows(influx3, "plant", "SELECT * FROM cpu") == [
        {
            "host": "a",
            "n": -5,
            "ok": True,
            "s": "x",
            "time": "1970-01-01T00:00:01",
            "u": 7,
            "v": 1.0,
        }
    ]
    status, body = await query(influx3, "plant", "SELECT * FROM cpu", "parquet")
    schema = pq.read_table(io.BytesIO(body)).schema
    assert schema.field("host").type == pa.dictionary(pa.int32(), pa.utf8())
    assert schema.field("time").type == pa.timestamp("ns")
    assert [schema.field(n).type for n in ("n", "u", "ok", "s", "v")] == [
        pa.int64(),
        pa.uint64(),
        pa.bool_(),
        pa.utf8(),
        pa.float64(),
    ]


async def test_missing_or_old_token_is_refused(influx3: Influx3StandIn) -> None:
    await write(influx3, "plant", "m v=1 1")
    influx3.rotate_token(ROTATED)
    status, body = await query(influx3, "plant", "SELECT 1")
    assert (status, json.loads(body)) == (401, {"error": "the request was not authenticated"})
    assert (await query(influx3, "plant", "SELECT 1", token=ROTATED))[0] == 200
    assert [r.status for r in influx3.requests] == [204, 401, 200]
    assert influx3.requests[1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert influx3.requests[1].database == "plant"


@pytest.mark.parametrize("accept_partial", ["true", "false"])
async def test_a_field_keeps_its_first_type(influx3: Influx3StandIn, accept_partial: str) -> None:
    await write(influx3, "plant", "m v=1 1")
    status, text = await write(
        influx3, "plant", "m v=2 2\nm v=3i 3\nm v=4 4", accept_partial=accept_partial
    )
    assert status == 400
    error = json.loads(text)
    problem = {
        "error_message": "invalid column type for column 'v', expected "
        "iox::column_type::field::float, got iox::column_type::field::integer",
        "line_number": 2,
        "original_line": "m v=3i 3",
    }
    kept = await rows(influx3, "plant", "SELECT time, v FROM m ORDER BY time")
    if accept_partial == "true":
        assert error == {"error": "partial write of line protocol occurred", "data": [problem]}
        assert [r["v"] for r in kept] == [1.0, 2.0, 4.0]
    else:
        assert error == {"error": "line protocol parsing error", "data": problem}
        assert [r["v"] for r in kept] == [1.0]
