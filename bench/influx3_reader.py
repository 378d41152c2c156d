"""The 3.x export reader, on answers from the 3.x stand-in: how fast tierflow turns a Parquet
or JSONL answer of `/api/v3/query_sql` into typed point batches, against Arrow reading the same
bytes in one call (the limit of the approach).

No InfluxDB 3 server can run on the machines this is written on. The bytes come from the
DataFusion-backed stand-in (`tests/influx3_standin.py`, NOT a real InfluxDB 3): points are
written to it as line protocol, then `SELECT * FROM "m"` is asked for with `format=parquet`
and `format=jsonl` over HTTP, and the bodies are kept. The stand-in's own speed is not measured
(a Python stand-in says nothing about a server's); what is measured is what tierflow adds on top
of a server's answer:

- Parquet: the body fed in 64 KiB pieces (as aiohttp hands a response over) through
  `parquet_answer_batches` (spooled, then read a bounded batch at a time in a worker thread,
  each batch checked against the table's schema) vs `pyarrow.parquet.read_table` of the body.
- JSONL: the body in 64 KiB pieces through `jsonl_batches` (blocks of whole lines parsed by
  Arrow with the table's schema) vs `pyarrow.json.read_json` of the body with the same schema.

Points: 200 hosts × 2 tags (host, site), a float, an integer and a boolean field, one a second.

    .venv/bin/python bench/influx3_reader.py [--points N] [--hosts H] [--repeat R] [--bodies DIR]

`--bodies DIR` keeps the two answers in DIR and reads them from there on the next run with the
same points and hosts (the stand-in takes a while to make them).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.influx3_standin import ThreadedInflux3StandIn

from tierflow._archive import FieldType
from tierflow._engines.sql._export import (
    TableSchema,
    jsonl_batches,
    parquet_answer_batches,
)

PIECE = 64 * 1024
RESULTS = Path(__file__).parent / "results"
SCHEMA = TableSchema(
    "m",
    ("host", "site"),
    {"count": FieldType.INTEGER, "ok": FieldType.BOOLEAN, "usage": FieldType.FLOAT},
)


def lines(points: int, hosts: int) -> list[str]:
    rng = random.Random(3)
    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * 10**9
    out = []
    for i in range(points // hosts):
        for host in range(hosts):
            stamp = start + i * 10**9 + rng.randrange(10**9)
            out.append(
                f"m,host=host-{host:04d},site=site-{host % 7} usage={rng.uniform(0, 100)!r},"
                f"count={rng.randrange(-(2**40), 2**40)}i,ok={'true' if i % 2 else 'false'} "
                f"{stamp}"
            )
    return out


def answers(points: int, hosts: int) -> dict[str, bytes]:
    """`SELECT * FROM "m"` as Parquet and as JSONL, as the stand-in sends them over HTTP."""
    with ThreadedInflux3StandIn() as server:
        body = lines(points, hosts)
        for first in range(0, len(body), 100_000):
            server.write("bench", "\n".join(body[first : first + 100_000]))
        found = {}
        for fmt in ("parquet", "jsonl"):
            request = urllib.request.Request(
                f"{server.url}/api/v3/query_sql",
                data=json.dumps({"db": "bench", "q": 'SELECT * FROM "m"', "format": fmt}).encode(),
                headers={
                    "Authorization": f"Bearer {server.token}",
                    "Content-Type": "application/json",
                },
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                found[fmt] = response.read()
    return found


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        yield bytes(view[start : start + PIECE])


PEAK_ARROW = {"parquet": 0, "jsonl": 0}


async def tierflow_parquet(data: bytes) -> int:
    rows = 0
    async for batch in parquet_answer_batches(pieces(data), measurement="m", schema=SCHEMA):
        rows += batch.num_rows
        PEAK_ARROW["parquet"] = max(PEAK_ARROW["parquet"], pa.total_allocated_bytes())
    return rows


async def tierflow_jsonl(data: bytes) -> int:
    rows = 0
    async for batch in jsonl_batches(pieces(data), SCHEMA):
        rows += batch.num_rows
        PEAK_ARROW["jsonl"] = max(PEAK_ARROW["jsonl"], pa.total_allocated_bytes())
    return rows


def arrow_parquet(data: bytes) -> int:
    return int(pq.read_table(io.BytesIO(data)).num_rows)


def arrow_jsonl(data: bytes) -> int:
    table = pa_json.read_json(
        io.BytesIO(data),
        parse_options=pa_json.ParseOptions(explicit_schema=SCHEMA.json_schema()),
    )
    return int(table.num_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bodies", type=Path, default=None)
    args = parser.parse_args()

    began = time.perf_counter()
    kept = (
        {
            fmt: args.bodies / f"influx3-{args.points}-{args.hosts}.{fmt}"
            for fmt in ("parquet", "jsonl")
        }
        if args.bodies
        else {}
    )
    if kept and all(path.exists() for path in kept.values()):
        bodies = {fmt: path.read_bytes() for fmt, path in kept.items()}
    else:
        bodies = answers(args.points, args.hosts)
        for fmt, path in kept.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bodies[fmt])
    points = args.points // args.hosts * args.hosts
    print(
        f"{points:,} points from the 3.x stand-in (DataFusion, not a real InfluxDB 3): "
        f"Parquet {len(bodies['parquet']) / 1e6:.1f} MB, JSONL {len(bodies['jsonl']) / 1e6:.0f} MB"
        f", made in {time.perf_counter() - began:.0f} s"
    )
    sides: dict[str, tuple[Callable[[bytes], int], Callable[[bytes], int]]] = {
        "parquet": (lambda d: asyncio.run(tierflow_parquet(d)), arrow_parquet),
        "jsonl": (lambda d: asyncio.run(tierflow_jsonl(d)), arrow_jsonl),
    }
    rates: dict[str, dict[str, float]] = {}
    for fmt, (ours, arrow) in sides.items():
        timings: dict[str, list[float]] = {"tierflow": [], "arrow": []}
        for _ in range(args.repeat):
            for side, read in (("tierflow", ours), ("arrow", arrow)):
                began = time.perf_counter()
                assert read(bodies[fmt]) == points, side
                timings[side].append(time.perf_counter() - began)
        rates[fmt] = {side: points / statistics.median(t) for side, t in timings.items()}
    print(f"\n  {'':22}{'Arrow, one call':>16}{'tierflow':>12}{'ratio':>8}")
    for fmt, rate in rates.items():
        ratio = rate["tierflow"] / rate["arrow"]
        print(
            f"  {fmt + ' (points/s)':22}{rate['arrow']:>16,.0f}{rate['tierflow']:>12,.0f}"
            f"{ratio:>7.2f}x"
        )
    print(
        f"\n  Arrow memory held while tierflow reads: at most {PEAK_ARROW['parquet'] / 1e6:.1f} MB"
        f" (Parquet), {PEAK_ARROW['jsonl'] / 1e6:.1f} MB (JSONL)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "influx3_reader.json").write_text(
        json.dumps(
            {
                "points": points,
                "bytes": {fmt: len(body) for fmt, body in bodies.items()},
                "rate": rates,
                "ratio": {fmt: r["tierflow"] / r["arrow"] for fmt, r in rates.items()},
                "peak_arrow_bytes": PEAK_ARROW,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
