"""Checks of the InfluxDB 3.x HTTP API that run unchanged against the stand-in
(`test_influx3_standin.py`) and against a real 3.x server (`test_influxdb3_live.py`), so what the
stand-in is trusted for is what a real server is held to.

Each check writes its own table into the database it is given and states what 3.x documents
(or its source does): the answer formats, the type of each column, refusals and their bodies.
Expected values are hand-computed here, never read back from the server under test.
"""

from __future__ import annotations

import io
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

NS = 1_000_000_000
HOUR = 3600 * NS


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)

    def jsonl(self) -> list[Any]:
        return [json.loads(line) for line in self.body.decode().splitlines()]

    def table(self) -> pa.Table:
        return pq.read_table(io.BytesIO(self.body))


@dataclass(frozen=True)
class Client:
    """A plain HTTP client of the 3.x API (urllib: nothing of tierflow's)."""

    url: str
    token: str

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        token: str | None = None,
    ) -> Answer:
        url = self.url.rstrip("/") + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        sent = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        request = urllib.request.Request(url, data=body, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                kind = response.headers.get("Content-Type", "")
                return Answer(int(response.status), response.read(), kind)
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, exc.read(), exc.headers.get("Content-Type", ""))

    def write(self, db: str, body: str, **params: str) -> Answer:
        query = {"db": db, "precision": "nanosecond", **params}
        return self.request("POST", "/api/v3/write_lp", query, body.encode())

    def query(self, db: str, q: str, format: str = "json", *, post: bool = True) -> Answer:
        if post:
            document = json.dumps({"db": db, "q": q, "format": format}).encode()
            headers = {"Content-Type": "application/json"}
            return self.request("POST", "/api/v3/query_sql", body=document, headers=headers)
        return self.request("GET", "/api/v3/query_sql", {"db": db, "q": q, "format": format})

    def rows(self, db: str, q: str) -> list[dict[str, Any]]:
        answer = self.query(db, q, "jsonl")
        assert answer.status == 200, answer
        return answer.jsonl()

    def create_database(self, db: str, retention_period: str | None = None) -> Answer:
        body: dict[str, Any] = {"db": db}
        if retention_period is not None:
            body["retention_period"] = retention_period
        headers = {"Content-Type": "application/json"}
        return self.request(
            "POST", "/api/v3/configure/database", body=json.dumps(body).encode(), headers=headers
        )

    def delete_database(self, db: str) -> Answer:
        return self.request("DELETE", "/api/v3/configure/database", {"db": db})

    def databases(self) -> list[str]:
        answer = self.request("GET", "/api/v3/configure/database", {"format": "json"})
        assert answer.status == 200, answer
        return [row["iox::database"] for row in answer.json()]


# -- typed points -------------------------------------------------------------------------------

TYPED = (
    'typed,host=a f=1.5,i=9223372036854775807i,u=18446744073709551615u,b=true,s="x \\"y\\" \\\\"'
    " 1000000001\n"
    "typed,host=b i=-9223372036854775808i 2000000000\n"
)
TYPED_ROWS = [
    {
        "b": True,
        "f": 1.5,
        "host": "a",
        "i": 2**63 - 1,
        "s": 'x "y" \\',
        "time": "1970-01-01T00:00:01.000000001",
        "u": 2**64 - 1,
    },
    {"host": "b", "i": -(2**63), "time": "1970-01-01T00:00:02"},
]


def check_typed_points(client: Client, db: str) -> None:
    """Every field type, at its edges, comes back exactly: JSON and JSONL leave nulls out and
    write 64-bit integers as exact numbers, CSV leaves them empty, Parquet keeps 3.x's column
    types (tags Dictionary(Int32, Utf8), `time` Timestamp(ns) without a zone)."""
    assert client.write(db, TYPED).status == 204
    q = "SELECT * FROM typed ORDER BY time"
    json_answer = client.query(db, q, "json")
    assert (json_answer.status, json_answer.content_type) == (200, "application/json")
    assert json_answer.json() == TYPED_ROWS
    jsonl = client.query(db, q, "jsonl", post=False)
    assert (jsonl.status, jsonl.content_type) == (200, "application/jsonl")
    assert jsonl.jsonl() == TYPED_ROWS

    csv_answer = client.query(db, q, "csv")
    assert (csv_answer.status, csv_answer.content_type) == (200, "text/csv")
    assert csv_answer.body.decode().splitlines() == [
        "b,f,host,i,s,time,u",
        'true,1.5,a,9223372036854775807,"x ""y"" \\",1970-01-01T00:00:01.000000001,'
        "18446744073709551615",
        ",,b,-9223372036854775808,,1970-01-01T00:00:02,",
    ]

    parquet = client.query(db, q, "parquet")
    assert (parquet.status, parquet.content_type) == (200, "application/vnd.apache.parquet")
    table = parquet.table()
    assert dict(zip(table.schema.names, table.schema.types, strict=True)) == {
        "b": pa.bool_(),
        "f": pa.float64(),
        "host": pa.dictionary(pa.int32(), pa.utf8()),
        "i": pa.int64(),
        "s": pa.utf8(),
        "time": pa.timestamp("ns"),
        "u": pa.uint64(),
    }
    assert table.column("time").cast(pa.int64()).to_pylist() == [1_000_000_001, 2 * NS]
    assert table.column("u").to_pylist() == [2**64 - 1, None]
    assert table.column("host").to_pylist() == ["a", "b"]

    pretty = client.query(db, q, "pretty").body.decode().splitlines()
    assert pretty[0].startswith("+-")
    assert [c.strip() for c in pretty[1].strip("|").split("|")] == [
        "b",
        "f",
        "host",
        "i",
        "s",
        "time",
        "u",
    ]


def check_information_schema(client: Client, db: str) -> None:
    """`information_schema.columns` names each column's Arrow type (what tierflow reads to learn
    field types), and `SHOW TABLES` lists the table under schema `iox`."""
    assert client.write(db, 'schema_t,host=a f=1,i=1i,u=1u,b=t,s="" 1\n').status == 204
    q = (
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'schema_t' ORDER BY column_name"
    )
    types = {r["column_name"]: r["data_type"] for r in client.rows(db, q)}
    # DataFusion's spelling of the time type changed with arrow-rs 57 ("Timestamp(Nanosecond,
    # None)" before, "Timestamp(ns)" since); either names nanoseconds without a zone.
    assert types.pop("time") in {"Timestamp(ns)", "Timestamp(Nanosecond, None)"}
    assert types == {
        "b": "Boolean",
        "f": "Float64",
        "host": "Dictionary(Int32, Utf8)",
        "i": "Int64",
        "s": "Utf8",
        "u": "UInt64",
    }
    tables = client.rows(db, "SHOW TABLES")
    assert {"table_catalog": "public", "table_schema": "iox", "table_name": "schema_t"} in [
        {k: r[k] for k in ("table_catalog", "table_schema", "table_name")} for r in tables
    ]


# -- writes -------------------------------------------------------------------------------------


def check_type_conflict(client: Client, db: str, *, accept_partial: bool) -> None:
    """A field's type is fixed by its first write. A later line of another type is refused with
    400 naming the line; with `accept_partial=false` nothing of that body lands, with `true` the
    other lines do."""
    assert client.write(db, "conflict v=1 1\n").status == 204
    flag = "true" if accept_partial else "false"
    answer = client.write(
        db, "conflict v=2 2\nconflict v=3i 3\nconflict v=4 4\n", accept_partial=flag
    )
    assert answer.status == 400, answer
    problem = {
        "error_message": "invalid column type for column 'v', expected "
        "iox::column_type::field::float, got iox::column_type::field::integer",
        "line_number": 2,
        "original_line": "conflict v=3i 3",
    }
    kept = [r["v"] for r in client.rows(db, "SELECT v FROM conflict ORDER BY time")]
    if accept_partial:
        assert answer.json() == {
            "error": "partial write of line protocol occurred",
            "data": [problem],
        }
        assert kept == [1.0, 2.0, 4.0]
    else:
        # 3.x servers before June 2026 say "parsing failed for write_lp endpoint".
        assert answer.json()["error"] in {
            "line protocol parsing error",
            "parsing failed for write_lp endpoint",
        }
        assert answer.json()["data"] == problem
        assert kept == [1.0]


def check_refusals(client: Client, db: str) -> None:
    """A body with no line (blank, comments) is refused: 400 "incoming write was empty"; a line
    with one field twice is refused naming the field; a line 3.x cannot parse, with the crate's
    message."""
    empty = client.write(db, "\n# nothing\n")
    assert (empty.status, empty.body) == (400, b"incoming write was empty")
    twice = client.write(db, "cpu,host=a usage=0.5,usage=0.6", accept_partial="false")
    assert twice.status == 400
    assert twice.json()["data"]["error_message"] == (
        "invalid line protocol - multiple instances of 'usage' field found"
    )
    broken = client.write(db, "cpu,host=a usage=0.5 1\ncpu usage= 2\n", accept_partial="true")
    assert broken.status == 400
    assert broken.json() == {
        "error": "partial write of line protocol occurred",
        "data": [
            {
                "error_message": "No fields were provided",
                "line_number": 2,
                "original_line": "cpu usage= 2",
            }
        ],
    }
    assert client.rows(db, "SELECT usage FROM cpu") == [{"usage": 0.5}]


def check_overwrite(client: Client, db: str) -> None:
    """A point with the series and time of an earlier one overwrites it field by field (tag
    order in the line does not matter); missing fields are null."""
    body = "over,a=1,b=2 x=1,y=1 5\nover,b=2,a=1 y=2,z=2 5\nover,a=1 x=9 5\n"
    assert client.write(db, body).status == 204
    assert client.rows(db, "SELECT * FROM over ORDER BY a, b NULLS FIRST") == [
        {"a": "1", "time": "1970-01-01T00:00:00.000000005", "x": 9.0},
        {"a": "1", "b": "2", "time": "1970-01-01T00:00:00.000000005", "x": 1.0, "y": 2.0, "z": 2.0},
    ]


def check_precisions(client: Client, db: str) -> None:
    """`precision` scales timestamps: second, millisecond, microsecond, nanosecond (and their
    short forms)."""
    for precision, stamp in [("second", 3), ("ms", 3_000), ("microsecond", 3_000_000), ("ns", 3)]:
        answer = client.write(db, f"prec,p={precision} v=1 {stamp}", precision=precision)
        assert answer.status == 204, answer
    got = {r["p"]: r["time"] for r in client.rows(db, "SELECT p, time FROM prec")}
    assert got == {
        "second": "1970-01-01T00:00:03",
        "ms": "1970-01-01T00:00:03",
        "microsecond": "1970-01-01T00:00:03",
        "ns": "1970-01-01T00:00:00.000000003",
    }


# -- SQL ----------------------------------------------------------------------------------------


def aggregate_points() -> list[tuple[str, int, float, int]]:
    """(host, time, v, n) over three hours; values are multiples of 1/4 so every sum is exact
    in any order."""
    return [
        (host, minute * 60 * NS, scale * (minute % 11) / 4, minute * scale)
        for host, scale in (("a", 1), ("b", -3))
        for minute in range(0, 180, 7)
    ]


def check_sql_aggregates(client: Client, db: str) -> None:
    """avg/min/max/count/sum per `date_bin` window (with an origin: the window offset) and host
    equal the values computed here from the points written."""
    points = aggregate_points()
    body = "".join(f"agg,host={h} v={v!r},n={n}i {t}\n" for h, t, v, n in points)
    assert client.write(db, body).status == 204
    offset = 15 * 60 * NS
    q = (
        "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMP '1970-01-01T00:15:00') AS window, "
        "host, avg(v) AS mean, min(v) AS low, max(v) AS high, count(v) AS count, sum(v) AS total, "
        "sum(n) AS n_total FROM agg WHERE time >= TIMESTAMP '1970-01-01T00:15:00' "
        "AND time < TIMESTAMP '1970-01-01T02:15:00' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    answer = client.query(db, q, "parquet")
    assert answer.status == 200, answer
    table = answer.table()
    assert table.schema.field("window").type == pa.timestamp("ns")
    assert table.schema.field("count").type == pa.int64()
    assert table.schema.field("n_total").type == pa.int64()
    got = [
        {**row, "window": int(w), "host": str(row["host"])}
        for row, w in zip(
            table.drop_columns(["window"]).to_pylist(),
            table.column("window").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]
    windows: dict[tuple[int, str], list[tuple[float, int]]] = {}
    for host, t, v, n in points:
        if offset <= t < offset + 2 * HOUR:
            windows.setdefault(((t - offset) // HOUR * HOUR + offset, host), []).append((v, n))
    expected = [
        {
            "window": start,
            "host": host,
            "mean": math.fsum(v for v, _ in values) / len(values),
            "low": min(v for v, _ in values),
            "high": max(v for v, _ in values),
            "count": len(values),
            "total": math.fsum(v for v, _ in values),
            "n_total": sum(n for _, n in values),
        }
        for (start, host), values in sorted(windows.items())
    ]
    assert got == expected


def check_sql_errors(client: Client, db: str) -> None:
    """A query of a table that does not exist is a planning error: 400, DataFusion's text, and
    so is a statement that would change something. A database that does not exist: 404 with a
    JSON error."""
    assert client.write(db, "present v=1 1\n").status == 204
    answer = client.query(db, "SELECT * FROM absent")
    assert answer.status == 400
    assert "table 'public.iox.absent' not found" in answer.body.decode()
    # A query reads: no INSERT, CREATE or SET (DataFusion's planning error, 400).
    for statement, kind in (
        ("INSERT INTO present VALUES (2, now())", "DML"),
        ("CREATE TABLE other AS SELECT 1", "DDL"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
    ):
        answer = client.query(db, statement)
        assert answer.status == 400, statement
        assert f"{kind} not supported" in answer.body.decode()
    assert client.rows(db, "SELECT v FROM present") == [{"v": 1.0}]
    # One statement per query: DataFusion's NotImplemented, which 3.x answers with 405.
    answer = client.query(db, "SELECT 1; SELECT 2")
    assert answer.status == 405
    assert "only supports a single SQL statement" in answer.body.decode()
    answer = client.query(db + "_missing", "SELECT 1")
    assert answer.status == 404
    assert answer.json() == {"error": f"query error: database not found: {db}_missing"}


# -- admin and auth -----------------------------------------------------------------------------


def check_configure_database(client: Client, db: str) -> None:
    """Create (200), list (`format` required), create again (409), delete (200), delete again
    (404); a name 3.x refuses gets 400 and a JSON error."""
    created = client.create_database(db, "30d")
    assert created.status == 200, created
    assert db in client.databases()
    again = client.create_database(db)
    assert (again.status, again.body) == (
        409,
        b"attempted to create a resource that already exists",
    )
    assert client.request("GET", "/api/v3/configure/database").status == 400
    assert client.delete_database(db).status == 200
    assert db not in client.databases()
    assert client.delete_database(db).status == 404
    bad = client.create_database("_x")
    assert bad.status == 400
    assert bad.json() == {"error": "db name did not start with a number or letter"}


def check_auth(client: Client, db: str) -> None:
    """A wrong token and no token get 401 with 3.x's JSON body; `Token` works like `Bearer`."""
    answer = client.request("GET", "/api/v3/query_sql", {"db": db, "q": "SELECT 1"}, token="nope")
    assert (answer.status, answer.json()) == (401, {"error": "the request was not authenticated"})
    url = client.url.rstrip("/") + "/api/v3/configure/database?format=json"
    try:
        urllib.request.urlopen(url, timeout=30).close()
        status = 200
    except urllib.error.HTTPError as exc:
        with exc:
            status = exc.code
    assert status == 401
    token = client.request(
        "GET",
        "/api/v3/configure/database",
        {"format": "json"},
        headers={"Authorization": f"Token {client.token}"},
    )
    assert token.status == 200
    # influxdb3/tests/server/auth.rs `auth_http`, `http_write_basic_auth`.
    malformed = (
        '{"error": "Authorization header was malformed, the request was not in the form of '
        "'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and "
        'Basic"}'
    )
    for header in (f"Bearer {client.token} whee", f"bearer {client.token}", "Bearer"):
        answer = client.request(
            "GET",
            "/api/v3/query_sql",
            {"db": db, "q": "SELECT 1"},
            headers={"Authorization": header},
        )
        assert (answer.status, answer.body.decode()) == (400, malformed), header


# -- a real 3.x server's recorded answers -----------------------------------------------------

# `influxdata/influxdb`, influxdb3/tests/server/write.rs
# (`test_table_creation_with_special_characters_line_protocol_compatibility`) and its insta
# snapshots `lib__server__write__special_chars_query_results.snap` and `…_table_columns.snap`:
# what a real 3.x server answered.
SPECIAL_LINES = [
    r"metrics,normal_tag=value1,tag\ with\ spaces=value2,tag\,with\,commas=value3,"
    r"tag\=with\=equals=value4,tag\ with\ spaces\,and\=all=value5 normal_field=1.0,"
    r'field\ with\ spaces=42i,field\,with\,commas="test",field\=with\=equals=true,'
    r"field\ with\ all\,special\=chars=100u 1000000000",
    r"metrics,normal_tag=value1,tag\ with\ spaces=value\ with\ spaces normal_field=2.0,"
    r"field\ with\ spaces=84i 2000000000",
]
SPECIAL_ROWS = [
    {
        "field with all,special=chars": 100,
        "field with spaces": 42,
        "field,with,commas": "test",
        "field=with=equals": True,
        "normal_field": 1.0,
        "normal_tag": "value1",
        "tag with spaces": "value2",
        "tag with spaces,and=all": "value5",
        "tag,with,commas": "value3",
        "tag=with=equals": "value4",
        "time": "1970-01-01T00:00:01",
    },
    {
        "field with spaces": 84,
        "normal_field": 2.0,
        "normal_tag": "value1",
        "tag with spaces": "value with spaces",
        "time": "1970-01-01T00:00:02",
    },
]
SPECIAL_COLUMNS = [
    ("field with all,special=chars", "UInt64", "YES"),
    ("field with spaces", "Int64", "YES"),
    ("field,with,commas", "Utf8", "YES"),
    ("field=with=equals", "Boolean", "YES"),
    ("normal_field", "Float64", "YES"),
    ("normal_tag", "Dictionary(Int32, Utf8)", "YES"),
    ("tag with spaces", "Dictionary(Int32, Utf8)", "YES"),
    ("tag with spaces,and=all", "Dictionary(Int32, Utf8)", "YES"),
    ("tag,with,commas", "Dictionary(Int32, Utf8)", "YES"),
    ("tag=with=equals", "Dictionary(Int32, Utf8)", "YES"),
    ("time", "Timestamp(ns)", "NO"),
]


def check_recorded_special_characters(client: Client, db: str) -> None:
    """Names with spaces, commas and equals signs, escaped, come back as a real server gave
    them: `SELECT *` (columns in name order, nulls left out) and `SHOW COLUMNS`."""
    for line in SPECIAL_LINES:
        assert client.write(db, line).status == 204
    assert client.query(db, "SELECT * FROM metrics ORDER BY time").json() == SPECIAL_ROWS
    columns = client.rows(db, "SHOW COLUMNS FROM metrics")
    assert [(c["column_name"], c["data_type"], c["is_nullable"]) for c in columns] == (
        SPECIAL_COLUMNS
    )
    assert {(c["table_catalog"], c["table_schema"], c["table_name"]) for c in columns} == {
        ("public", "iox", "metrics")
    }


# `influxdata/influxdb`, influxdb3/tests/server/query.rs: a real 3.x server's answers, byte for
# byte (`api_v3_query_sql`, `api_v3_query_sql_params`, `api_v3_query_null_tag_values_null_fields`,
# `api_query_with_default_browser_header`, `api_v3_query_sql_invalid_query_should_return_400…`,
# `api_v3_query_sql_not_found`). Their bodies indent continuation lines; the parser skips the
# leading spaces, as 3.x's does.
CPU_SECONDS = """cpu,host=a,region=us-east usage=0.9 2998574936
            cpu,host=b,region=us-east usage=0.50 2998574936
            cpu,host=a,region=us-east usage=0.80 2998574937
            cpu,host=b,region=us-east usage=0.60 2998574937
            cpu,host=a,region=us-east usage=0.70 2998574938
            cpu,host=b,region=us-east usage=0.70 2998574938
            cpu,host=a,region=us-east usage=0.50 2998574939
            cpu,host=b,region=us-east usage=0.80 2998574939"""
PARAMS_PRETTY = (
    "+------+---------+---------------------+-------+\n"
    "| host | region  | time                | usage |\n"
    "+------+---------+---------------------+-------+\n"
    "| b    | us-east | 2065-01-07T17:28:58 | 0.7   |\n"
    "| b    | us-east | 2065-01-07T17:28:59 | 0.8   |\n"
    "+------+---------+---------------------+-------+"
)
PARAMS_QUERY = (
    "SELECT host, region, time, usage FROM cpu WHERE host = $host AND usage > $usage ORDER BY time"
)


def check_recorded_pretty_answers(client: Client, db: str) -> None:
    """Pretty tables, parameters, a missing placeholder, `SELECT *` with nulls, a browser's
    Accept header, invalid queries, an unknown database: as a real server answered."""
    made = [f"{db}_{n}" for n in range(3)]
    try:
        _recorded_pretty_answers(client, db, *made)
    finally:
        for name in made:
            client.delete_database(name)


def _recorded_pretty_answers(client: Client, db: str, second: str, third: str, fourth: str) -> None:
    body = "cpu,host=s1,region=us-east usage=0.9 2998574936\ncpu,host=s1,region=us-east "
    body += "usage=0.89 2998574937\ncpu,host=s1,region=us-east usage=0.85 2998574938"
    assert client.write(db, body, precision="second").status == 204
    pretty = client.query(db, "SELECT host, region, time, usage FROM cpu", "pretty", post=False)
    assert pretty.body.decode() == (
        "+------+---------+---------------------+-------+\n"
        "| host | region  | time                | usage |\n"
        "+------+---------+---------------------+-------+\n"
        "| s1   | us-east | 2065-01-07T17:28:56 | 0.9   |\n"
        "| s1   | us-east | 2065-01-07T17:28:57 | 0.89  |\n"
        "| s1   | us-east | 2065-01-07T17:28:58 | 0.85  |\n"
        "+------+---------+---------------------+-------+"
    )
    assert client.query(db, "SELECT count(usage) FROM cpu", "pretty").body.decode() == (
        "+------------------+\n| count(cpu.usage) |\n+------------------+\n"
        "| 3                |\n+------------------+"
    )

    db = second
    assert client.write(db, CPU_SECONDS, precision="second").status == 204
    document = {"db": db, "q": PARAMS_QUERY, "params": {"host": "b", "usage": 0.60}}
    document["format"] = "pretty"
    posted = client.request(
        "POST",
        "/api/v3/query_sql",
        body=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert posted.body.decode() == PARAMS_PRETTY
    params = json.dumps({"host": "b", "usage": 0.60})
    query = {"db": db, "q": PARAMS_QUERY, "format": "pretty", "params": params}
    assert client.request("GET", "/api/v3/query_sql", query).body.decode() == PARAMS_PRETTY
    missing = client.request(
        "GET", "/api/v3/query_sql", {**query, "params": json.dumps({"not_host": "a"})}
    )
    assert 400 <= missing.status < 500
    assert "No value found for placeholder with name $host" in missing.body.decode()

    db = third
    body = "cpu,host=a,region=us-east usage=0.9,system=0.1 2998674931\n"
    body += "            cpu,host=b usage=0.80,system=0.1 2998674934"
    assert client.write(db, body, precision="second").status == 204
    assert (
        client.write(db, "cpu,host=a,region=us-east usage=0.9 2998674935", precision="s").status
        == 204
    )
    assert client.query(db, "SELECT * FROM cpu ORDER BY time", "pretty").body.decode() == (
        "+------+---------+--------+---------------------+-------+\n"
        "| host | region  | system | time                | usage |\n"
        "+------+---------+--------+---------------------+-------+\n"
        "| a    | us-east | 0.1    | 2065-01-08T21:15:31 | 0.9   |\n"
        "| b    |         | 0.1    | 2065-01-08T21:15:34 | 0.8   |\n"
        "| a    | us-east |        | 2065-01-08T21:15:35 | 0.9   |\n"
        "+------+---------+--------+---------------------+-------+"
    )

    db = fourth
    assert client.write(db, "cpu,region=us,host=a usage=99 2998674934", precision="s").status == 204
    browser = client.request(
        "GET",
        "/api/v3/query_sql",
        {"db": db, "format": "pretty", "q": "SELECT * FROM cpu"},
        headers={"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    )
    assert browser.body.decode() == (
        "+------+--------+---------------------+-------+\n"
        "| host | region | time                | usage |\n"
        "+------+--------+---------------------+-------+\n"
        "| a    | us     | 2065-01-08T21:15:34 | 99.0  |\n"
        "+------+--------+---------------------+-------+"
    )
    for invalid in (
        "SHOW MEASUREMENTS",
        "SELEC * FROM cpu",
        "SELECT * cpu",
        "SELECT count( FROM cpu",
    ):
        answer = client.query(db, invalid, "pretty", post=False)
        assert 400 <= answer.status < 500, invalid
    assert client.query(db + "_never", "SELECT * FROM foo", "pretty").status == 404


def check_type_conflict_partial(client: Client, db: str) -> None:
    check_type_conflict(client, db, accept_partial=True)


def check_type_conflict_whole(client: Client, db: str) -> None:
    check_type_conflict(client, db, accept_partial=False)


def check_configure_another_database(client: Client, db: str) -> None:
    check_configure_database(client, db + "_admin")


#: The checks both suites run, each given a client and a database name of its own.
SHARED: list[Callable[[Client, str], None]] = [
    check_typed_points,
    check_information_schema,
    check_refusals,
    check_overwrite,
    check_precisions,
    check_sql_aggregates,
    check_sql_errors,
    check_auth,
    check_type_conflict_partial,
    check_type_conflict_whole,
    check_configure_another_database,
    check_recorded_special_characters,
    check_recorded_pretty_answers,
]
