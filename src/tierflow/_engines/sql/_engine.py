"""InfluxDB 3: SQL over HTTP, through the shared HTTP layer (`tierflow._http`).

- Reads: `POST /api/v3/query_sql` with a JSON body `{"db", "q", "format"}`. `query` (small
  answers: checks, counts, fingerprints) asks for `json`; the downsample's read asks for
  `parquet`, the one format that carries every column's type exactly (an int64 field that
  happens to be whole, a uint64, a tag's Dictionary type, nanosecond times).
- Writes: `POST /api/v3/write_lp?db=…&precision=nanosecond&accept_partial=false`: a refused
  line fails the whole body, so nothing half-lands; anything but 204 raises.
- Health: `GET /health` (200 "OK"). Admin: `/api/v3/configure/database`.
- Auth: `Authorization: Bearer <token>`, the token from its source and fetched again once on a
  401, so a rotated token needs no restart. Tokens never appear in messages.
- No `SELECT … INTO`: `execute` runs a downsample as read-aggregate-write
  (`tierflow._engines.sql._downsample`). The server cannot delete a time range of a table, so
  the dialect does not declare `delete_window`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tierflow._config import InfluxDB3Connection
from tierflow._engines._base import MISSING_TARGET_FIX, Execution, HttpEngine, Series
from tierflow._engines.sql._dialect import DIALECT
from tierflow._errors import QueryError, TransientEngineError
from tierflow._http import ANY_STATUS, ErrorTable, KnownError, Reply, TokenAuth, server_message
from tierflow._templates import RenderedQuery
from tierflow._windows import EPOCH

__all__ = ["ERRORS", "InfluxDB3Engine", "classify", "explain", "parse_time"]

# InfluxDB 3 Core's error texts (influxdb3_server/src/http.rs: `Error` and its status mapping;
# DataFusion's planning errors come back as 400 with the message). First match wins.
_KNOWN: tuple[KnownError, ...] = (
    # A refused line, first (its text, quoted in the message, may hold any words). http.rs:
    # write_lp with accept_partial=false answers 400 "line protocol parsing error" (before June
    # 2026: "parsing failed for write_lp endpoint"), with accept_partial=true 400 (422 when a
    # limit is hit) "partial write of line protocol occurred"; either names each line refused
    # (`server_message`: its number in the body, the server's reason, the line). Decisive: the
    # same body is refused again whatever status a proxy reports.
    KnownError(
        "line protocol parsing error|parsing failed for write_lp",
        QueryError,
        "the server refused that line; nothing of the body was written",
        decisive=True,
    ),
    KnownError(
        "partial write of line protocol",
        QueryError,
        "the server refused those lines and kept the body's others",
        decisive=True,
    ),
    # http.rs: DbDoesNotExist → 404 "database not found"; the query executor's
    # "database not found: <name>".
    KnownError(r"database (\S+ )?not found", QueryError, MISSING_TARGET_FIX, decisive=True),
    # DataFusion: "table 'public.iox.cpu' not found" (a table that was never written).
    KnownError(r"table '.*' not found", QueryError, "no point was ever written to that table"),
    # A field keeps the type of its first write: "invalid column type for column '…'".
    KnownError("invalid column type", QueryError, "a field keeps the type of its first write"),
    KnownError("timeout", TransientEngineError),
    KnownError("timed out", TransientEngineError),
    KnownError("unavailable", TransientEngineError),
    KnownError("too many requests", TransientEngineError),
    KnownError("connection refused", TransientEngineError),
    KnownError("connection reset", TransientEngineError),
)

#: The shared status table with 3.x's texts.
ERRORS = ErrorTable(_KNOWN)
classify = ERRORS.classify
explain = ERRORS.explain


class InfluxDB3Engine(HttpEngine[InfluxDB3Connection]):
    """Sends SQL to one InfluxDB 3 server, at most `max_concurrency` requests at a time
    (`transport` replaces the network in request-contract tests)."""

    dialect = DIALECT
    errors = ERRORS

    def auth(self, config: InfluxDB3Connection) -> TokenAuth:
        """The connection's token as a bearer token (fetched again once on a 401)."""
        return TokenAuth(config.token, scheme="Bearer")

    def tls(self, config: InfluxDB3Connection) -> dict[str, Any]:
        return {"verify_tls": config.verify_tls, "ca_cert": config.ca_cert}

    def scrub(self, text: str) -> str:
        """`text` with the token cut out, should a server or proxy have echoed it back."""
        return self.http.auth.scrub(text)

    def _database(self, database: str | None) -> str:
        found = database or self.config.database
        if not found:
            raise QueryError(
                f"connection {self.name}: no database to query (the tier names none and the "
                "connection sets no `database`)"
            )
        return found

    # -- the contract ----------------------------------------------------------------------------

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        """Run a downsample or a query job's statements (`INSERT INTO "db"."table" SELECT …`):
        read each SELECT's answer, write its rows to the named dest table as line protocol with
        exact types; `points_written` counts the points (rows) written."""
        from tierflow._engines.sql._downsample import run_statements

        return await run_statements(self, query)

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        """Run small read queries (JSON answers), one request per statement (`;` between them):
        one `Series` per statement that answers rows, named `""`, its columns the answer's
        (`time` first, as integer nanoseconds, when it is there); keys a row lacks (null
        cells: the JSON answer leaves them out) are None. A table named with its database
        (`"db"."table"`) is read in that database (the name cut to the table), else in
        `database` (or the connection's)."""
        from tierflow._engines.sql._downsample import split_statements

        try:
            statements = split_statements(text, every_tag=False)
        except ValueError:
            # A statement that reads no table (`SELECT 1`), sent as it is.
            return await self._query_one(text, database)
        found: list[Series] = []
        for statement in statements:
            db = statement.source_database or database
            found += await self._query_one(statement.select, db)
        return found

    async def _query_one(self, text: str, database: str | None) -> list[Series]:
        reply = await self.read(text, database=database, fmt="json")
        rows = json.loads(reply.body) if reply.body.strip() else []
        if not isinstance(rows, list):
            raise TransientEngineError(
                f"connection {self.name}: /api/v3/query_sql answered JSON that is not a list"
            )
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        names = list(columns)
        if "time" in columns:
            names = ["time", *[n for n in names if n != "time"]]
        values = [
            [parse_time(row.get(n)) if n == "time" else row.get(n) for n in names] for row in rows
        ]
        return [Series("", {}, names, values)] if rows else []

    async def read(self, text: str, *, database: str | None, fmt: str) -> Reply:
        """Beyond the contract: `POST /api/v3/query_sql` in `database` (or the connection's),
        the whole answer in `fmt` (`json`, `jsonl`, `parquet`, `csv`)."""
        db = self._database(database)
        return await self.http.request(
            "POST",
            "/api/v3/query_sql",
            kind="query",
            json_body={"db": db, "q": text, "format": fmt},
            doing=f"querying database {db!r}",
        )

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """POST line protocol (nanosecond timestamps) to `/api/v3/write_lp` with
        `accept_partial=false`: 3.x then refuses the whole body when any line is refused
        (400), so a batch is never half-written. Return the bytes sent."""
        reply = await self.http.request(
            "POST",
            "/api/v3/write_lp",
            kind="write",
            params={"db": database, "precision": "nanosecond", "accept_partial": "false"},
            headers={"Content-Type": "text/plain; charset=utf-8"},
            body=body,
            compress=True,
            ok=(200, 204),
            doing=f"writing to database {database!r}",
        )
        return reply.sent

    async def ping(self) -> None:
        """`/health` must answer 200."""
        reply = await self.http.request("GET", "/health", kind="ping", ok=ANY_STATUS, probe=True)
        if reply.status != 200:
            raise classify(reply.status, "")(
                f"connection {self.name}: /health answered HTTP {reply.status}: "
                f"{self.scrub(server_message(reply.body))}",
                status=reply.status,
            )

    # -- beyond the contract: databases, for `tierflow apply` and `validate --online` -----------

    async def databases(self) -> list[dict[str, Any]]:
        """The server's databases (`GET /api/v3/configure/database?format=json`), each as the
        server describes it (`iox::database`, and `retention_period` where the server says it)."""
        reply = await self.http.request(
            "GET",
            "/api/v3/configure/database",
            kind="databases",
            params={"format": "json"},
            doing="listing databases",
        )
        found = reply.json()
        return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []

    async def create_database(self, name: str, retention_period: str | None) -> None:
        """`POST /api/v3/configure/database` `{"db", "retention_period"}`."""
        body: dict[str, Any] = {"db": name}
        if retention_period is not None:
            body["retention_period"] = retention_period
        await self.http.request(
            "POST",
            "/api/v3/configure/database",
            kind="databases",
            json_body=body,
            ok=(200, 201, 204),
            doing=f"creating database {name!r}",
        )


_SECOND = timedelta(seconds=1)


def parse_time(value: object) -> object:
    """A `time` cell of a JSON answer as integer nanoseconds since the epoch. arrow-json writes
    a Timestamp(ns) without a zone as `2026-01-01T00:00:00.000000001` (no `Z`: UTC by
    InfluxDB's convention); integers pass through; None stays None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if not isinstance(value, str):
        raise TransientEngineError(f"malformed time in a query answer: {value!r}")
    text = value.removesuffix("Z").removesuffix("+00:00")
    whole, _, fraction = text.partition(".")
    try:
        moment = datetime.fromisoformat(whole + "+00:00")
    except ValueError:
        raise TransientEngineError(f"malformed time in a query answer: {value!r}") from None
    if fraction and not fraction.isdigit():
        raise TransientEngineError(f"malformed time in a query answer: {value!r}")
    seconds = (moment - EPOCH) // _SECOND
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])
