"""The 2.x export reader, offline: how fast tierflow turns a pivoted annotated-CSV stream into
Arrow batches, against Arrow parsing the same bytes in one call (the limit of the approach).

No InfluxDB 2.x server can run on the machines this is written on, so the server's side of a
2.x export cannot be measured here; this measures what tierflow adds on top of it. The body is
built as 2.x writes it for `pivot(rowKey: ["_time"], columnKey: ["_field"], ...)`: one table
per series (host, site), a float, an integer and a boolean field, nanosecond RFC 3339 times,
CRLF line ends, one block (every table has the same columns). It is fed in 64 KiB pieces, as
aiohttp hands a response over.

    .venv/bin/python bench/flux_reader.py [--points N] [--hosts H] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from tierflow._engines.flux._export import annotated_batches

PIECE = 64 * 1024
RESULTS = Path(__file__).parent / "results"


def body(points: int, hosts: int) -> bytes:
    rng = random.Random(3)
    per_host = points // hosts
    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    lines = [
        "#datatype,string,long,dateTime:RFC3339Nano,string,string,double,long,boolean",
        "#group,false,false,false,true,true,false,false,false",
        "#default,_result,,,,,,,",
        ",result,table,_time,host,site,usage,count,ok",
    ]
    for table in range(hosts):
        host, site = f"host-{table:04d}", f"site-{table % 7}"
        for i in range(per_host):
            seconds, nanos = start + i, rng.randrange(1_000_000_000)
            moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            fraction = f"{nanos:09d}".rstrip("0")
            stamp = f"{moment}.{fraction}Z" if fraction else f"{moment}Z"
            lines.append(
                f",,{table},{stamp},{host},{site},{rng.uniform(0, 100)!r},"
                f"{rng.randrange(-(2**40), 2**40)},{'true' if i % 2 else 'false'}"
            )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        yield bytes(view[start : start + PIECE])


PEAK_ARROW = [0]


async def tierflow(data: bytes) -> int:
    rows = 0
    async for batch in annotated_batches(pieces(data)):
        rows += batch.num_rows
        PEAK_ARROW[0] = max(PEAK_ARROW[0], pa.total_allocated_bytes())
    return rows


def arrow_alone(data: bytes) -> int:
    names = ["", "result", "table", "_time", "host", "site", "usage", "count", "ok"]
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(skip_rows=4, column_names=names),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                "_time": pa.timestamp("ns", tz="UTC"),
                "host": pa.string(),
                "site": pa.string(),
                "usage": pa.float64(),
                "count": pa.int64(),
                "ok": pa.bool_(),
            },
            include_columns=["_time", "host", "site", "usage", "count", "ok"],
            strings_can_be_null=True,
        ),
    )
    return int(table.num_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    began = time.perf_counter()
    data = body(args.points, args.hosts)
    points = args.points // args.hosts * args.hosts
    print(
        f"{points:,} points as pivoted annotated CSV, {len(data) / 1e6:.0f} MB, "
        f"built in {time.perf_counter() - began:.1f} s"
    )

    timings: dict[str, list[float]] = {"tierflow": [], "arrow": []}
    for _ in range(args.repeat):
        began = time.perf_counter()
        assert asyncio.run(tierflow(data)) == points
        timings["tierflow"].append(time.perf_counter() - began)
        began = time.perf_counter()
        assert arrow_alone(data) == points
        timings["arrow"].append(time.perf_counter() - began)
    rate = {side: points / statistics.median(times) for side, times in timings.items()}
    ratio = rate["tierflow"] / rate["arrow"]
    print(f"\n  {'':28}{'Arrow, one call':>16}{'tierflow':>12}{'ratio':>8}")
    print(
        f"  {'read (points/s)':28}{rate['arrow']:>16,.0f}{rate['tierflow']:>12,.0f}{ratio:>7.2f}x"
    )
    print(
        f"\n  Arrow memory held after each batch while tierflow reads: at most "
        f"{PEAK_ARROW[0] / 1e6:.1f} MB (the body is {len(data) / 1e6:.0f} MB; "
        "one block is parsed at a time)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flux_reader.json").write_text(
        json.dumps(
            {
                "points": points,
                "bytes": len(data),
                "rate": rate,
                "ratio": ratio,
                "peak_arrow_bytes": PEAK_ARROW[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
