"""The 3.x downsample's read (read-aggregate-write): a statement's Parquet answer is streamed,
spooled and read a bounded batch at a time while its points are written, so the memory held
does not grow with the chunk's answer."""

from __future__ import annotations

import asyncio
import gc
import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tierflow._config import InfluxDB3Connection
from tierflow._engines.sql import _export
from tierflow._engines.sql._engine import InfluxDB3Engine
from tierflow._templates import RenderedQuery
from tierflow.testing import HttpRequest, MockResponse, MockTransport

BOUNDS = (
    "\"time\" >= TIMESTAMP '2026-01-01T00:00:00Z' AND \"time\" < TIMESTAMP '2026-01-02T00:00:00Z'"
)
STATEMENT = (
    'INSERT INTO "warm"."m_1m" SELECT date_bin(INTERVAL \'1 minute\', "time") AS "time", "host", '
    + ", ".join(f'avg("f{k}") AS "f{k}"' for k in range(6))
    + f' FROM "hot"."m" WHERE {BOUNDS} GROUP BY 1, "host"'
)


@pytest.mark.parametrize("spool_memory", [64 << 20, 256 << 10])  # in memory; on disk, mapped
def test_a_large_downsample_answer_is_written_in_bounded_memory(
    spool_memory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow memory sampled at every write stays a small fraction of the whole answer decoded
    (what reading it in one call holds), and every row of the answer is written, once."""
    monkeypatch.setattr(_export, "SPOOL_MEMORY", spool_memory)
    n = 400_000
    start = 1_767_225_600 * 10**9
    table = pa.table(
        {
            "time": pa.array([start + i * 60 * 10**9 // 50 for i in range(n)], pa.timestamp("ns")),
            "host": pa.array([f"h{i % 50}" for i in range(n)]).dictionary_encode(),
            **{f"f{k}": pa.array([i * 0.5 + k for i in range(n)], pa.float64()) for k in range(6)},
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=20_000)
    answer = sink.getvalue()
    whole = pq.read_table(io.BytesIO(answer)).nbytes
    del table
    gc.collect()
    baseline = pa.total_allocated_bytes()
    peak = 0
    lines: list[bytes] = []

    def handler(request: HttpRequest) -> MockResponse:
        nonlocal peak
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        if request.url.endswith("/api/v3/query_sql"):
            return MockResponse(200, answer, chunks=64 * 1024)
        assert request.url.endswith("/api/v3/write_lp"), request.url
        assert request.params["db"] == "warm"
        body = gzip.decompress(request.body) if request.body[:2] == b"\x1f\x8b" else request.body
        lines.extend(body.splitlines())
        return MockResponse(204)

    connection = InfluxDB3Connection.model_validate(
        {"kind": "influxdb3", "url": "http://influx3.example:8181", "token": "t"}
    )
    engine = InfluxDB3Engine("v3", connection, transport=MockTransport(handler))

    async def run() -> int:
        try:
            query = RenderedQuery(STATEMENT, "q.sql.j2", "1", "sql")
            execution = await engine.execute(query)
            return execution.points_written
        finally:
            await engine.aclose()

    written = asyncio.run(run())
    assert written == n
    assert len(lines) == n
    assert lines[0] == f"m_1m,host=h0 f0=0,f1=1,f2=2,f3=3,f4=4,f5=5 {start}".encode()
    assert len(set(lines)) == n
    assert peak < whole / 4, (peak, whole)
