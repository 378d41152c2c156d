"""A recording stand-in of the InfluxDB 2.x HTTP API, for tests of tierflow's 2.x engine.

It stands in for the *request contract* only: it records every request (method, path, query,
headers, body, gunzipped) and answers the way InfluxDB 2.x documents (annotated CSV for queries,
`{"code", "message"}` JSON for errors, 204 for deletes and writes, `Retry-After` on 429/503).
It runs no Flux and stores nothing: whether a script computes the right thing is for the live suite
(`tests/integration/test_engine_contract.py` against a real `influxdb:2`).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import io
import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = [
    "ROTATED",
    "TOKEN",
    "Answer",
    "Point",
    "Recorded",
    "StandIn",
    "annotated_csv",
    "influxdb2_connection",
    "pivoted_csv",
    "running_in_thread",
    "unpivoted_csv",
]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The status the stand-in answered with (0 until it has answered).
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def annotated_csv(
    tables: Sequence[tuple[list[str], list[str], list[list[str]]]],
    *,
    group_key: Sequence[Sequence[str]] | None = None,
) -> bytes:
    """Annotated CSV as InfluxDB 2.x writes it: per block `#datatype`, `#group`, `#default`, a
    header, rows (RFC 4180 quoting), and a blank line. Each table is (columns, datatypes, rows);
    `result` and `table` columns are added in front like the server does. The group key of
    table i is `group_key[i]`, by default the series key of an unpivoted table (`_start`,
    `_stop`, `_field`, `_measurement` and every column not starting with `_`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for index, (columns, datatypes, rows) in enumerate(tables):
        writer.writerow(["#datatype", "string", "long", *datatypes])
        groups = [
            "true"
            if (
                c in group_key[index]
                if group_key is not None
                else c in {"_start", "_stop", "_field", "_measurement"} or not c.startswith("_")
            )
            else "false"
            for c in columns
        ]
        writer.writerow(["#group", "false", "false", *groups])
        writer.writerow(["#default", "_result", "", *[""] * len(columns)])
        writer.writerow(["", "result", "table", *columns])
        writer.writerows(["", "", str(index), *row] for row in rows)
        buffer.write("\r\n")
    return buffer.getvalue().encode()


Point = tuple[int, tuple[tuple[str, str], ...], tuple[tuple[str, Any], ...]]
KINDS = {float: "double", int: "long", bool: "boolean", str: "string"}
NS = 1_000_000_000


def rfc3339_nano(ns: int) -> str:
    """What Go's RFC3339Nano says: trailing zeros of the fraction trimmed, none for a whole
    second."""
    moment = datetime.fromtimestamp(ns // NS, UTC)
    fraction = f"{ns % NS:09d}".rstrip("0")
    return f"{moment:%Y-%m-%dT%H:%M:%S}" + (f".{fraction}" if fraction else "") + "Z"


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def pivoted_csv(points: Iterable[Point]) -> bytes:
    """What 2.x answers a pivoting script with, built here from first principles: a table per
    series (its tags the group key), a column per field that series has, a row per timestamp,
    and a new block (annotations, header) whenever the columns change."""
    series: dict[tuple[tuple[str, str], ...], dict[int, dict[str, Any]]] = defaultdict(dict)
    for time, tags, values in points:
        series[tags].setdefault(time, {}).update(values)
    tables: list[tuple[list[str], list[str], list[list[str]]]] = []
    keys: list[list[str]] = []
    for tags, rows in sorted(series.items()):
        kinds = {name: KINDS[type(v)] for row in rows.values() for name, v in row.items()}
        names = sorted(kinds)
        columns = ["_time", *(k for k, _ in tags), *names]
        datatypes = ["dateTime:RFC3339Nano", *(["string"] * len(tags)), *(kinds[f] for f in names)]
        body = [
            [
                rfc3339_nano(time),
                *(v for _, v in tags),
                *(cell(row[f]) if f in row else "" for f in names),
            ]
            for time, row in sorted(rows.items())
        ]
        tables.append((columns, datatypes, body))
        keys.append([k for k, _ in tags])
    return annotated_csv(tables, group_key=keys)


def unpivoted_csv(points: Iterable[Point]) -> bytes:
    """What 2.x answers the same script without `pivot()` with: a table per series, field and
    value type (`_time`, `_value`, `_field`, the tags; the group key `_field` and the tags), so a
    field written as an integer in one shard and a float in another comes as two tables."""
    values: dict[tuple[tuple[tuple[str, str], ...], str, str], dict[int, Any]] = defaultdict(dict)
    for time, tags, fields in points:
        for name, value in fields:
            values[(tags, name, KINDS[type(value)])][time] = value
    tables: list[tuple[list[str], list[str], list[list[str]]]] = []
    keys: list[list[str]] = []
    for (tags, name, kind), rows in sorted(values.items()):
        columns = ["_time", "_value", "_field", *(k for k, _ in tags)]
        datatypes = ["dateTime:RFC3339Nano", kind, "string", *(["string"] * len(tags))]
        body = [
            [rfc3339_nano(time), cell(value), name, *(v for _, v in tags)]
            for time, value in sorted(rows.items())
        ]
        tables.append((columns, datatypes, body))
        keys.append(["_field", *(k for k, _ in tags)])
    return annotated_csv(tables, group_key=keys)


#: The token the stand-in accepts by default, and the one tests rotate to.
TOKEN = "secret-token-1"
ROTATED = "secret-token-2"


def influxdb2_connection(url: str, token_file: Path, **overrides: object) -> Any:
    """An `InfluxDB2Connection` to `url` in org `acme`, its token read from `token_file`."""
    from tierflow._config import InfluxDB2Connection

    body: dict[str, object] = {
        "kind": "influxdb2",
        "url": url,
        "org": "acme",
        "token": {"kind": "file", "file": str(token_file)},
        "timeout": "5s",
        **overrides,
    }
    return InfluxDB2Connection.model_validate(body)


def error_csv(message: str) -> bytes:
    """The error table a 2.x server sends when a query fails after the response began."""
    quoted = '"' + message.replace('"', '""') + '"'
    return (
        "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n"
        f",error,reference\r\n,{quoted},\r\n\r\n"
    ).encode()


@dataclass
class StandIn:
    """Records requests; answers scripted `Answer`s per path (first in, first out), else the
    defaults: /health pass, /ready 200, buckets found if in `buckets`, deletes 204, queries
    `default_csv`. Requests with a token not in `tokens` get 401."""

    tokens: set[str] = field(default_factory=lambda: {TOKEN})
    org: str = "acme"
    buckets: set[str] = field(default_factory=lambda: {"hot", "warm"})
    default_csv: bytes = b""
    #: Answers a query from its Flux text, instead of `default_csv` (tests that need different
    #: results for an export and its count, say).
    on_query: Callable[[str], bytes | Answer] | None = None
    gzip_responses: bool = False
    requests: list[Recorded] = field(default_factory=list)
    scripted: dict[str, deque[Answer]] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    def script(self, path: str, *answers: Answer) -> None:
        self.scripted.setdefault(path, deque()).extend(answers)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # aiohttp's server has already undone one `Content-Encoding: gzip`, as InfluxDB 2.x's
        # handlers do (once: a body gzipped twice would reach its parser still gzipped, and is
        # recorded so here, for the tests to see).
        raw = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), raw)
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = self._answer(request)
            index = len(self.requests) - 1
            self.requests[index] = dataclasses.replace(self.requests[index], status=answer.status)
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight -= 1
        body = answer.body
        headers = dict(answer.headers)
        if self.gzip_responses and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(status=answer.status, body=body, headers=headers)

    def _answer(self, request: web.Request) -> Answer:
        queue = self.scripted.get(request.path)
        if queue:
            return queue.popleft()
        auth = request.headers.get("Authorization", "")
        if request.path not in {"/health", "/ready", "/ping"} and (
            not auth.startswith("Token ") or auth.removeprefix("Token ") not in self.tokens
        ):
            return _json(401, {"code": "unauthorized", "message": "unauthorized access"})
        if request.path == "/health":
            return _json(200, {"name": "influxdb", "status": "pass"})
        if request.path == "/ready":
            return _json(200, {"status": "ready"})
        if request.path == "/api/v2/buckets":
            wanted = request.query.get("name")
            if request.query.get("org") != self.org:
                return _json(404, {"code": "not found", "message": "organization not found"})
            found = [{"name": b, "orgID": "0a"} for b in sorted(self.buckets) if b == wanted]
            return _json(200, {"buckets": found})
        if request.path == "/api/v2/delete":
            return Answer(204)
        if request.path == "/api/v2/query/analyze":
            return _json(200, {"errors": []})
        if request.path == "/api/v2/query":
            body = self.default_csv
            if self.on_query is not None:
                answered = self.on_query(self.requests[-1].json()["query"])
                if isinstance(answered, Answer):
                    return answered
                body = answered
            return Answer(200, body, {"Content-Type": "text/csv; charset=utf-8"})
        if request.path == "/api/v2/write":
            if request.query.get("org") != self.org:
                return _json(404, {"code": "not found", "message": "organization not found"})
            if request.query.get("bucket") not in self.buckets:
                return _json(404, {"code": "not found", "message": "bucket not found"})
            return Answer(204)
        return _json(404, {"code": "not found", "message": f"path not found: {request.path}"})


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    return Answer(
        status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def error_answer(status: int, message: str, **headers: str) -> Answer:
    return _json(status, {"code": "error", "message": message}, headers)


@contextmanager
def running_in_thread(standin: StandIn) -> Iterator[StandIn]:
    """Serve `standin` from a thread with its own event loop (for subprocess tests)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(standin.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield standin
    finally:
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
