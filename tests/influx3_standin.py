"""A stand-in of the InfluxDB 3.x (Core) HTTP API whose SQL runs on Apache DataFusion.

No 3.x server can be installed here; 3.x executes SQL with DataFusion, which is on PyPI. So the
stand-in keeps the points written to it as Arrow data with 3.x's table schema (tags
`Dictionary(Int32, Utf8)`, `time` `Timestamp(ns)` without a zone, fields float64 / int64 /
uint64 / bool / utf8, columns in name order) and hands **every SQL query to DataFusion**: what a
query computes (aggregates, `date_bin`, casts, NULL handling, `information_schema`) is a real
engine's answer, not the stand-in's.

The rest follows the 3.x server's source (`influxdb3_server/src/http.rs`, `influxdb3_types`,
`influxdb3_write/src/write_buffer/validator.rs` in `influxdata/influxdb`) and its documentation,
and is proven only against those:
- `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=`: line protocol as the 3.x
  crate parses it (`tests/lineprotocol3.py`); a database is created by its first write; a
  field's type is fixed by its first write and a conflicting line refused. `accept_partial=false`
  refuses the whole body at its first bad line (400 `{"error": "line protocol parsing error",
  "data": {line}}`); `accept_partial=true` (3.x's default) keeps the good lines and answers 400
  `{"error": "partial write of line protocol occurred", "data": [lines]}`. A point with the
  series and time of an earlier one overwrites it field by field.
- `GET|POST /api/v3/query_sql` (`db`, `q`, `format`, `params`; a JSON body for POST; the `Accept`
  header when no format is given): `json` (one array; nulls left out, as arrow-json writes),
  `jsonl`, `csv`, `pretty`, `parquet` (pyarrow's writer; no body for no rows).
- `GET|POST|PUT|DELETE /api/v3/configure/database` (`format` required to list; `retention_period`
  hides older points from queries, against an injectable `now`), `GET /health`, `GET|POST
  /ping`. Every path needs the token (`Bearer`, `Token` or `Basic user:token`) unless listed in
  `disable_authz` (3.x's `--disable-authz`); a missing or wrong one gets 401
  `{"error": "the request was not authenticated"}`.

What it does not stand in for: 3.x's own SQL functions (`date_bin_gapfill`, `locf`,
`interpolate`, `selector_first`/`_last`/`_min`/`_max`, `tz`, `date_bin_wallclock`) are not
registered, so a query using one fails (400), never passes unchecked; the `datafusion` package
is 55 where 3.x Core builds on a DataFusion 50–51 fork (an expression's result type may differ
between the two, a function may be missing from the older); rows of a query without ORDER BY
come by series and time, which a real server does not promise; `query_influxql`, `/write`,
`/api/v2/write`, tokens, caches, plugins and system tables are not served (404).

It records every request (`requests`) and can fail the next ones (`fail_next`) or change its
token (`rotate_token`) for the client's 401 → re-fetch → retry path. A real server is the final
word: `tests/integration/test_influxdb3_live.py` runs the same checks against one when
`TIERFLOW_TEST_INFLUXDB3_URL` and `TIERFLOW_TEST_INFLUXDB3_TOKEN` are set.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import io
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from aiohttp import web
from datafusion import SessionConfig, SessionContext, SQLOptions

from tests.lineprotocol3 import LineError, ParsedLine, display, parse_lines, raw_lines

__all__ = [
    "ROTATED",
    "TOKEN",
    "Influx3StandIn",
    "Recorded",
    "ThreadedInflux3StandIn",
    "arrow_json_rows",
    "parse_retention",
]

TOKEN = "apiv3_secret-token-1"
ROTATED = "apiv3_secret-token-2"
NS = 1_000_000_000
INTERNAL_DB = "_internal"
_ARROW_TYPES: dict[str, pa.DataType] = {
    "tag": pa.dictionary(pa.int32(), pa.utf8()),
    "float": pa.float64(),
    "integer": pa.int64(),
    "uinteger": pa.uint64(),
    "string": pa.utf8(),
    "boolean": pa.bool_(),
}
_PRECISIONS = {
    "auto": None,
    "second": NS,
    "s": NS,
    "millisecond": 1_000_000,
    "ms": 1_000_000,
    "microsecond": 1_000,
    "us": 1_000,
    "u": 1_000,
    "nanosecond": 1,
    "ns": 1,
    "n": 1,
}
_FORMATS = {
    "json": "application/json",
    "jsonl": "application/jsonl",
    "json_lines": "application/jsonl",
    "csv": "text/csv",
    "pretty": "text/plain; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_ACCEPT = {
    "application/vnd.apache.parquet": "parquet",
    "text/csv": "csv",
    "text/plain": "pretty",
    "application/json": "json",
    "*/*": "json",
}
#: What 3.x lets a query do (`iox_query`'s `sql_to_logical_plan`): no CREATE, no INSERT or
#: COPY, no SET; refused as planning errors (400).
_READ_ONLY = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_MALFORMED = (
    '{"error": "Authorization header was malformed, the request was not in the form of '
    "'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and "
    'Basic"}'
)
_DB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(/[A-Za-z0-9_-]+)?")


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The database it named (`db` in the query string or the JSON body), if any.
    database: str | None
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def body_length(self) -> int:
        """The body's length as the handler read it (after a gzip encoding is undone)."""
        return len(self.body)


class _Refused(Exception):
    """An answer other than success: status, body, content type."""

    def __init__(self, status: int, body: str | bytes, content_type: str = "text/plain") -> None:
        super().__init__(status)
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type


def _error_json(status: int, error: str, data: Any = None) -> _Refused:
    body: dict[str, Any] = {"error": error}
    if data is not None:
        body["data"] = data
    return _Refused(status, json.dumps(body), "application/json")


# -- storage ------------------------------------------------------------------------------------

SeriesKey = tuple[tuple[str, str], ...]


@dataclass
class Table:
    """One table: column name → `tag` or a field kind; points by (series, time)."""

    columns: dict[str, str] = field(default_factory=dict)
    points: dict[tuple[SeriesKey, int], dict[str, Any]] = field(default_factory=dict)
    arrow_cache: pa.Table | None = None

    def arrow(self, since: int | None) -> pa.Table:
        """The table as 3.x's schema has it (columns in name order, rows by series and time),
        without the points before `since`."""
        if self.arrow_cache is None:
            self.arrow_cache = self._build()
        table = self.arrow_cache
        if since is not None:
            table = table.filter(
                pc.greater_equal(table["time"], pa.scalar(since, pa.timestamp("ns")))
            )
        return table

    def _build(self) -> pa.Table:
        names = sorted([*self.columns, "time"])
        kinds = {**self.columns, "time": "time"}
        rows = sorted(self.points)
        arrays = []
        fields = []
        for name in names:
            kind = kinds[name]
            if kind == "time":
                arrays.append(pa.array([t for _, t in rows], pa.timestamp("ns")))
                fields.append(pa.field("time", pa.timestamp("ns"), nullable=False))
                continue
            if kind == "tag":
                values = [dict(series).get(name) for series, _ in rows]
                array = pa.array(values, pa.utf8()).dictionary_encode()
                array = array.cast(_ARROW_TYPES["tag"])
            else:
                values = [self.points[key].get(name) for key in rows]
                array = pa.array(values, _ARROW_TYPES[kind])
            arrays.append(array)
            fields.append(pa.field(name, _ARROW_TYPES[kind]))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


@dataclass
class Database:
    name: str
    retention_ns: int | None = None
    tables: dict[str, Table] = field(default_factory=dict)


_UNIT_NAMES = {
    1: "ns nsec",
    1_000: "us usec",
    1_000_000: "ms msec",
    NS: "s sec secs second seconds",
    60 * NS: "m min mins minute minutes",
    3600 * NS: "h hr hrs hour hours",
    86_400 * NS: "d day days",
    7 * 86_400 * NS: "w week weeks",
}
_UNITS = {name: ns for ns, names in _UNIT_NAMES.items() for name in names.split()}


def parse_retention(text: str) -> int:
    """A humantime duration (`30d`, `1h 30m`, `720h`) in ns, as 3.x reads `retention_period`."""
    parts = re.findall(r"\s*(\d+)\s*([a-zA-Z]+)", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"unknown time unit {unit!r}")
        total += int(number) * _UNITS[unit]
    return total


# -- answers in 3.x's formats -------------------------------------------------------------------


def _iso(ns: int, zone: str | None = None) -> str:
    """A timestamp as arrow-cast displays it by default: without a zone chrono's
    `NaiveDateTime` Debug (`1970-01-01T00:00:01.5`… the fraction in 0, 3, 6 or 9 digits); with
    one, RFC 3339 with the same fraction rule, in that zone, `Z` for UTC."""
    seconds, fraction = divmod(ns, NS)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    if zone is not None:
        moment = moment.astimezone(_zone(zone))
    text = f"{moment:%Y-%m-%dT%H:%M:%S}"
    if fraction % 1_000_000 == 0 and fraction:
        text += f".{fraction // 1_000_000:03d}"
    elif fraction % 1_000 == 0 and fraction:
        text += f".{fraction // 1_000:06d}"
    elif fraction:
        text += f".{fraction:09d}"
    if zone is None:
        return text
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _zone(name: str) -> tzinfo:
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if match:
        minutes = int(match[2]) * 60 + int(match[3])
        return timezone(timedelta(minutes=-minutes if match[1] == "-" else minutes))
    return ZoneInfo(name)


def _column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return list(column.cast(kind.value_type).to_pylist())
    if pa.types.is_timestamp(kind):
        raw = column.cast(pa.timestamp(kind.unit, kind.tz)).cast(pa.int64()).to_pylist()
        scale = {"s": NS, "ms": 1_000_000, "us": 1_000, "ns": 1}[kind.unit]
        return [None if v is None else _iso(v * scale, kind.tz) for v in raw]
    if pa.types.is_date(kind):
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    if (
        pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    ):
        return list(column.to_pylist())
    return [None if v is None else str(v) for v in column.to_pylist()]


def arrow_json_rows(batches: list[pa.RecordBatch]) -> list[dict[str, Any]]:
    """Rows as arrow-json writes them: an object per row, null values left out, timestamps as
    arrow-cast displays them, dictionaries as their values, a non-finite float as `null` (its
    key kept: the value is not null, JSON cannot spell it)."""
    rows: list[dict[str, Any]] = []
    for batch in batches:
        columns = [(name, _column_values(batch.column(name))) for name in batch.schema.names]
        rows.extend(
            {
                name: _json_value(values[index])
                for name, values in columns
                if values[index] is not None
            }
            for index in range(batch.num_rows)
        )
    return rows


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # lexical_core's spellings of the non-finite values.
        return repr(value) if math.isfinite(value) else {"nan": "NaN"}.get(str(value), str(value))
    return str(value)


def render(batches: list[pa.RecordBatch], schema: pa.Schema, format: str) -> bytes:
    """The body 3.x sends for a result in `format` (`record_batch_stream_to_body`)."""
    if format == "parquet":
        if not batches:
            return b""
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_batches(batches, schema=batches[0].schema), sink)
        return sink.getvalue()
    if format == "json":
        rows = arrow_json_rows(batches)
        return ("[" + ",".join(_json_text(r) for r in rows) + "]").encode()
    if format in {"jsonl", "json_lines"}:
        return "".join(_json_text(r) + "\n" for r in arrow_json_rows(batches)).encode()
    names = list(schema.names)
    table_rows: list[list[str]] = []
    for batch in batches:
        columns = [_column_values(batch.column(n)) for n in names]
        table_rows += [[_csv_cell(c[i]) for c in columns] for i in range(batch.num_rows)]
    if format == "csv":
        if not batches:
            return b""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(table_rows)
        return buffer.getvalue().encode()
    if not batches:
        return b"++\n++"  # arrow's table of nothing
    return _pretty(names, table_rows).encode()


def _pretty(names: list[str], rows: list[list[str]]) -> str:
    """arrow's `pretty_format_batches`: a boxed table, left-aligned."""
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(names), rule, *(line(r) for r in rows), rule])


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Influx3StandIn:
    """The 3.x HTTP API on 127.0.0.1 (an ephemeral port); `async with` starts and stops it on the
    running loop. `now()` gives the server's clock in ns (retention, lines without a time)."""

    token: str = TOKEN
    now: Callable[[], int] = time.time_ns
    #: How many databases (besides `_internal`) the catalog holds at most.
    max_databases: int = 100
    #: Paths served without a token, as `influxdb3 serve --disable-authz health,ping` allows.
    disable_authz: frozenset[str] = frozenset()
    requests: list[Recorded] = field(default_factory=list)
    databases: dict[str, Database] = field(
        default_factory=lambda: {INTERNAL_DB: Database(INTERNAL_DB)}
    )
    url: str = ""
    _failures: list[tuple[int, float | None]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _runner: web.AppRunner | None = None
    #: The `Retry-After` of the failure being answered.
    _retry_after: float | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
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
            self._runner = None

    # -- test hooks ------------------------------------------------------------------------------

    def rotate_token(self, new: str) -> None:
        """From now on only `new` is accepted (the old token gets 401)."""
        self.token = new

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` requests (any path) with `status` and `{"error": …}`, with a
        `Retry-After` header when given."""
        self._failures += [(status, retry_after)] * times

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def create_database(self, name: str, retention_period: str | None = None) -> None:
        with self._lock:
            if name in self.databases:
                raise ValueError(f"database {name} exists")
            retention = parse_retention(retention_period) if retention_period else None
            self.databases[name] = Database(name, retention)

    def write(self, db: str, body: str, *, precision: str = "nanosecond") -> None:
        """Write line protocol directly (no HTTP); a refused line raises `ValueError`."""
        errors = self._write(db, body, precision=precision, accept_partial=False)
        if errors is None:
            raise ValueError("incoming write was empty")
        if errors:
            raise ValueError(errors)

    def sql(self, db: str, query: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run `query` over `db` with DataFusion, as `/api/v3/query_sql` would (no HTTP); what
        the server would refuse raises `ValueError` with its status and body."""
        try:
            batches, schema = self._execute(db, query, params)
        except _Refused as refused:
            raise ValueError(f"HTTP {refused.status}: {refused.body.decode()}") from None
        # The collected batches' schema (nullability as executed) wins over the plan's.
        return pa.Table.from_batches(batches, schema=batches[0].schema if batches else schema)

    # -- storage and SQL -------------------------------------------------------------------------

    def _write(
        self, db: str, body: str, *, precision: str, accept_partial: bool
    ) -> list[dict[str, Any]] | None:
        """Apply a body; the refused lines as 3.x reports them (`WriteLineError`), or None when
        the body holds no line at all."""
        multiplier = _PRECISIONS[precision]
        with self._lock:
            database = self.databases.get(db)
            if database is None:
                self._room_for_a_database()
                database = Database(db)
            # Lines are checked against the schema as it grows line by line (a first line fixes
            # a type a later one in the same body must keep); nothing lands until all are checked
            # when partial writes are refused.
            schema = {name: dict(table.columns) for name, table in database.tables.items()}
            accepted: list[tuple[ParsedLine, int]] = []
            errors: list[dict[str, Any]] = []
            # A column never changes type, so a line shaped like one already checked (the same
            # table, tag keys, field keys and kinds) passes without another look.
            checked: set[tuple[Any, ...]] = set()
            raw = iter(raw_lines(body))
            for number, parsed in enumerate(parse_lines(body), start=1):
                problem: str | None = None
                # 3.x names a line it cannot parse by the raw line in step with the parsed ones,
                # and a line it refuses later as it prints the parsed line again.
                unparsed = next(raw, "")
                if isinstance(parsed, LineError):
                    problem, line = str(parsed), unparsed
                else:
                    line = display(parsed)
                    shape = (
                        parsed.measurement,
                        tuple(k for k, _ in parsed.tags),
                        tuple((k, kind) for k, kind, _ in parsed.fields),
                    )
                    if shape not in checked:
                        problem = _check(schema.setdefault(parsed.measurement, {}), parsed)
                        if problem is None:
                            checked.add(shape)
                stamp = 0
                if problem is None and isinstance(parsed, ParsedLine):
                    try:
                        stamp = self._timestamp(parsed.timestamp, multiplier)
                    except OverflowError as exc:
                        problem = str(exc)
                if problem is not None:
                    error = {"error_message": problem, "line_number": number}
                    error["original_line"] = _truncate(line)
                    if not accept_partial:
                        return [error]
                    errors.append(error)
                    continue
                assert isinstance(parsed, ParsedLine)
                accepted.append((parsed, stamp))
            if not accepted and not errors:
                return None
            self.databases[db] = database
            for name, columns in schema.items():
                if columns:
                    database.tables.setdefault(name, Table()).columns.update(columns)
            for parsed, stamp in accepted:
                _apply(database.tables[parsed.measurement], parsed, stamp)
            return errors

    def _room_for_a_database(self) -> None:
        """3.x's catalog limit (`Catalog::NUM_DBS_LIMIT`, `_internal` not counted): 422."""
        if len(self.databases) - (INTERNAL_DB in self.databases) >= self.max_databases:
            raise _error_json(
                422, f"Adding a new database would exceed limit of {self.max_databases} databases"
            )

    def _timestamp(self, value: int | None, multiplier: int | None) -> int:
        if value is None:
            now = self.now()
            return now if multiplier is None else now // multiplier * multiplier
        if multiplier is None:
            magnitude = abs(value) // NS
            multiplier = (
                NS
                if magnitude < 5
                else 1_000_000
                if magnitude < 5_000
                else 1_000
                if magnitude < 5_000_000
                else 1
            )
        stamp = value * multiplier
        if not -(2**63) <= stamp < 2**63:
            raise OverflowError(f"timestamp, {value}, out of range for precision")
        return stamp

    def _execute(
        self, db: str, query: str, params: Mapping[str, Any] | None
    ) -> tuple[list[pa.RecordBatch], pa.Schema]:
        with self._lock:
            database = self.databases.get(db)
            if database is None:
                raise _error_json(404, f"query error: database not found: {db}")
            since = None if database.retention_ns is None else self.now() - database.retention_ns
            tables = {name: table.arrow(since) for name, table in database.tables.items()}
        config = (
            SessionConfig()
            .with_information_schema(True)
            .with_default_catalog_and_schema("public", "iox")
        )
        context = SessionContext(config)
        for name, table in tables.items():
            # Quoted, so that DataFusion takes the name as it is (no case folding, no `a.b` read
            # as schema `a`, table `b`), as 3.x's catalog does.
            quoted = '"' + name.replace('"', '""') + '"'
            batches = table.to_batches() or [
                pa.record_batch([pa.array([], f.type) for f in table.schema], schema=table.schema)
            ]
            context.register_record_batches(quoted, [batches])
        try:
            frame = context.sql_with_options(query, _READ_ONLY, param_values=dict(params or {}))
            schema = frame.schema()
            batches = frame.collect()
        except Exception as exc:  # DataFusion raises ValueError/Exception with its own text
            raise _datafusion_refusal(exc) from exc
        return batches, schema

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        database = request.query.get("db")
        if database is None and raw and request.content_type == "application/json":
            try:
                body = json.loads(raw)
                database = body.get("db") if isinstance(body, dict) else None
            except ValueError:
                database = None
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                raw,
                database,
            )
        )
        index = len(self.requests) - 1
        headers: dict[str, str] = {}
        try:
            status, body, content_type = self._answer(request, raw)
        except _Refused as refused:
            status, body, content_type = refused.status, refused.body, refused.content_type
            if self._retry_after is not None:
                headers["Retry-After"] = f"{self._retry_after:g}"
        self._retry_after = None
        self.requests[index] = dataclasses.replace(self.requests[index], status=status)
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(status=status, body=body, headers=headers)

    def _answer(self, request: web.Request, raw: bytes) -> tuple[int, bytes, str]:
        if self._failures:
            status, self._retry_after = self._failures.pop(0)
            raise _error_json(status, f"stand-in failure {status}")
        path, method = request.path, request.method
        if path not in self.disable_authz:
            self._authenticate(request)
        # aiohttp has undone the encoding already; 3.x's `read_body` takes gzip only.
        encoding = request.headers.get("Content-Encoding")
        if encoding not in {None, "identity", "gzip"}:
            raise _Refused(400, f"unacceptable content-encoding: {encoding}")
        if path == "/health" and method == "GET":
            return 200, b"OK", "text/plain; charset=utf-8"
        if path == "/ping" and method in {"GET", "POST"}:
            body = {
                "product_name": "InfluxDB 3 Core (tierflow's stand-in)",
                "version": "3.x-standin",
                "revision": "datafusion",
                "process_id": "00000000-0000-0000-0000-000000000000",
            }
            return 200, json.dumps(body).encode(), "application/json"
        if path == "/api/v3/write_lp" and method == "POST":
            return self._write_lp(request, raw)
        if path == "/api/v3/query_sql" and method in {"GET", "POST"}:
            return self._query_sql(request, raw)
        if path == "/api/v3/configure/database":
            return self._configure_database(request, raw)
        return 404, b"Not found", "text/plain"

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise _Refused(401, '{"error": "the request was not authenticated"}')
        parts = header.split(" ")
        if len(parts) != 2 or parts[0] not in {"Bearer", "Token", "Basic"}:
            raise _Refused(400, _MALFORMED)
        token = parts[1]
        if parts[0] == "Basic":
            try:
                decoded = base64.b64decode(token, validate=True).decode()
            except ValueError:
                raise _Refused(400, _MALFORMED) from None
            user, colon, token = decoded.rpartition(":")
            if not colon or ":" in user:
                raise _Refused(400, _MALFORMED)
        if token != self.token:
            raise _Refused(401, '{"error": "the request was not authenticated"}')

    def _write_lp(self, request: web.Request, raw: bytes) -> tuple[int, bytes, str]:
        query = request.query
        if "db" not in query:
            if not request.query_string:
                raise _Refused(400, "missing query parameter 'db'")
            raise _Refused(400, "serde error: missing field `db`")
        db = query["db"]
        _validate_db_name(db)
        precision = query.get("precision", "auto")
        if precision not in _PRECISIONS:
            raise _Refused(400, f"serde error: unknown variant `{precision}`")
        accept_partial = _flag(query.get("accept_partial"), default=True)
        _flag(query.get("no_sync"), default=False)
        try:
            body = raw.decode()
        except UnicodeDecodeError as exc:
            raise _Refused(400, f"body content is not valid utf8: {exc}") from None
        errors = self._write(db, body, precision=precision, accept_partial=accept_partial)
        if errors is None:
            raise _Refused(400, "incoming write was empty")
        if not errors:
            return 204, b"", ""
        if not accept_partial:
            raise _error_json(400, "line protocol parsing error", errors[0])
        raise _error_json(400, "partial write of line protocol occurred", errors)

    def _query_sql(self, request: web.Request, raw: bytes) -> tuple[int, bytes, str]:
        accept = request.headers.get("Accept")
        header_format = _ACCEPT.get(accept or "*/*")
        if header_format is None:
            assert accept is not None
            if "text/html" in accept or "*/*" in accept:
                header_format = "json"
            else:
                raise _Refused(400, f"invalid mime type ({accept})")
        if request.method == "GET":
            if not request.query_string:
                raise _Refused(400, "missing query parameters 'db' and 'q'")
            values: dict[str, Any] = dict(request.query)
            if "params" in values:
                try:
                    values["params"] = json.loads(values["params"])
                except ValueError as exc:
                    raise _Refused(400, f"serde json error: {exc}") from None
        else:
            try:
                values = json.loads(raw)
            except ValueError as exc:
                raise _Refused(400, f"serde json error: {exc}") from None
        for key in ("db", "q"):
            if not isinstance(values.get(key), str):
                error = "serde json error" if request.method == "POST" else "serde error"
                raise _Refused(400, f"{error}: missing field `{key}`")
        format = values.get("format") or header_format
        if format not in _FORMATS:
            raise _Refused(400, f"serde error: unknown variant `{format}`")
        batches, schema = self._execute(values["db"], values["q"], values.get("params"))
        return 200, render(batches, schema, format), _FORMATS[format]

    def _configure_database(self, request: web.Request, raw: bytes) -> tuple[int, bytes, str]:
        if request.method == "GET":
            format = request.query.get("format")
            if format is None:
                raise _Refused(400, "serde error: missing field `format`")
            if format not in _FORMATS:
                raise _Refused(400, f"serde error: unknown variant `{format}`")
            with self._lock:
                names = sorted(self.databases)
            batch = pa.record_batch(
                [pa.array(names, pa.utf8())],
                schema=pa.schema([pa.field("iox::database", pa.utf8(), nullable=False)]),
            )
            return 200, render([batch], batch.schema, format), _FORMATS[format]
        if request.method == "POST":
            try:
                body = json.loads(raw)
                name = body["db"]
                retention = body.get("retention_period")
                nanos = parse_retention(retention) if retention is not None else None
            except (ValueError, KeyError, TypeError) as exc:
                raise _Refused(400, f"serde json error: {exc}") from None
            _validate_db_name(name)
            with self._lock:
                if name in self.databases:
                    raise _Refused(409, "attempted to create a resource that already exists")
                self._room_for_a_database()
                self.databases[name] = Database(name, nanos)
            return 200, b"", ""
        if request.method == "PUT":
            # Set the retention period, or clear it when the body gives none.
            try:
                body = json.loads(raw)
                name = body["db"]
                retention = body.get("retention_period")
                nanos = parse_retention(retention) if retention is not None else None
            except (ValueError, KeyError, TypeError) as exc:
                raise _Refused(400, f"serde json error: {exc}") from None
            with self._lock:
                if name not in self.databases:
                    raise _Refused(404, f"the requested resource was not found: {name}")
                self.databases[name].retention_ns = nanos
            return 200, b"", ""
        if request.method == "DELETE":
            name = request.query.get("db")
            if name is None:
                raise _Refused(400, "serde error: missing field `db`")
            with self._lock:
                if name not in self.databases:
                    raise _Refused(404, f"the requested resource was not found: {name}")
                del self.databases[name]
            return 200, b"", ""
        raise _Refused(404, "Not found")


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    if value not in {"true", "false"}:
        raise _Refused(400, f"serde error: invalid value: string {value!r}, expected a boolean")
    return value == "true"


def _validate_db_name(name: str) -> None:
    if not name:
        raise _error_json(400, "db name cannot be empty")
    if not name[0].isascii() or not name[0].isalnum():
        raise _error_json(400, "db name did not start with a number or letter")
    if not _DB_NAME.fullmatch(name):
        raise _error_json(
            400,
            "invalid character in database or rp name: must be ASCII, containing only letters, "
            "numbers, underscores, or hyphens",
        )


def _check(columns: dict[str, str], line: ParsedLine) -> str | None:
    """3.x's `validate_and_qualify_v1_line` against the table's columns (updated in place when
    the line is good): a column keeps its first type."""
    proposed = dict(columns)
    seen: set[str] = set()
    for key, _ in line.tags:
        problem = _column(proposed, key, "tag")
        if problem:
            return problem
    for key, kind, _ in line.fields:
        problem = _column(proposed, key, kind)
        if problem:
            return problem
        if key in seen:
            return f"invalid line protocol - multiple instances of '{key}' field found"
        seen.add(key)
    columns.update(proposed)
    return None


def _column(columns: dict[str, str], name: str, kind: str) -> str | None:
    if name == "time":
        return "'time' is a reserved column"
    existing = columns.setdefault(name, kind)
    if existing != kind:
        return (
            f"invalid column type for column '{name}', expected {_type_name(existing)}, "
            f"got {_type_name(kind)}"
        )
    return None


def _type_name(kind: str) -> str:
    return "iox::column_type::tag" if kind == "tag" else f"iox::column_type::field::{kind}"


def _apply(table: Table, line: ParsedLine, stamp: int) -> None:
    series = tuple(sorted(dict(line.tags).items())) if len(line.tags) > 1 else line.tags
    point = table.points.get((series, stamp))
    if point is None:
        table.points[(series, stamp)] = {key: value for key, _, value in line.fields}
    else:
        point.update((key, value) for key, _, value in line.fields)
    table.arrow_cache = None


def _truncate(line: str) -> str:
    """3.x caps `original_line` at 20 bytes (on a character boundary)."""
    cut = line.encode()[:20]
    return cut.decode(errors="ignore")


def _datafusion_refusal(exc: Exception) -> _Refused:
    """The status 3.x gives a DataFusion error (`datafusion_error_status_code`) and its text."""
    message = str(exc).removeprefix("DataFusion error: ")
    if message.startswith(("Error during planning", "SQL error", "Schema error")):
        status = 400
    elif message.startswith("This feature is not implemented"):
        status = 405
    else:
        status = 500
    return _Refused(status, message)


class ThreadedInflux3StandIn(Influx3StandIn):
    """The same stand-in served from its own thread and event loop (`with` starts and stops it),
    for tests that run tierflow in a subprocess."""

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, daemon=True, name="influx3-standin")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the 3.x stand-in did not start within 10 s")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None
        assert thread is not None
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
