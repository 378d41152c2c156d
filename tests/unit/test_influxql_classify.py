"""InfluxDB 1.x failures mapped onto tierflow's error tree; what a response says was written."""

from __future__ import annotations

from typing import Any

import pytest

from tierflow._config import InfluxDB1Connection
from tierflow._engines.influxql._engine import InfluxQLEngine, _points_written, classify, explain
from tierflow._errors import (
    AuthError,
    EngineError,
    QueryError,
    TierflowError,
    TransientEngineError,
)
from tierflow.testing import MockResponse, MockTransport


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_overload_and_server_errors_are_transient(status: int) -> None:
    cls = classify(status, "")
    assert cls is TransientEngineError
    assert cls("x").transient


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "error parsing query: found FROM, expected identifier at line 1, char 8"),
        (404, "404 page not found"),
    ],
)
def test_bad_requests_are_query_errors(status: int, message: str) -> None:
    cls = classify(status, message)
    assert cls is QueryError
    assert not cls("x").transient


@pytest.mark.parametrize(("status", "message"), [(401, "authorization failed"), (403, "forbidden")])
def test_auth_failures_are_permanent_engine_errors(status: int, message: str) -> None:
    # One status table for every engine now: what 1.x's engine raised for these (an AuthError,
    # decided before its own classify) is what the table says.
    cls = classify(status, message)
    assert cls is AuthError
    assert issubclass(cls, EngineError)
    assert not issubclass(cls, QueryError)
    assert not cls("x").transient
    assert issubclass(cls, TierflowError)


def test_other_statuses_are_plain_engine_errors() -> None:
    assert classify(418, "") is EngineError
    assert classify(501, "not implemented") is EngineError


@pytest.mark.parametrize(
    "message",
    [
        "database not found: x",
        "retention policy not found: one_year",
        "error parsing query: found EOF, expected FROM at line 1, char 9",
        'partial write: field type conflict: input field "usage" is type integer',
        "max-select-point limit exceeed: (10000/10000)",
    ],
)
def test_statement_errors_are_query_errors(message: str) -> None:
    assert classify(None, message) is QueryError


@pytest.mark.parametrize(
    "message",
    [
        "engine is closed",
        "Engine Is Closed",
        "read tcp 127.0.0.1:8088: i/o timeout",
        "context deadline exceeded",
        "shard is disabled",
        "store is closed",
        "cache-max-memory-size exceeded: (1073741824/1073741824)",
    ],
)
def test_busy_statement_errors_are_transient(message: str) -> None:
    assert classify(None, message) is TransientEngineError


def test_the_status_decides_before_the_message() -> None:
    assert classify(500, "error parsing query") is TransientEngineError
    assert classify(400, "engine is closed") is QueryError


@pytest.mark.parametrize("message", ["timeout", "query-timeout limit exceeded"])
def test_a_bare_timeout_statement_error_is_permanent(message: str) -> None:
    # The server's own query-timeout limit: the same query would hit it again.
    assert classify(None, message) is QueryError


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (None, "database not found: http_timeouts"),
        (400, "error parsing query: found request_timeout, expected FROM at line 1, char 30"),
    ],
)
def test_names_that_contain_a_marker_do_not_make_an_error_transient(
    status: int | None, message: str
) -> None:
    assert classify(status, message) is QueryError


# --- _points_written ---------------------------------------------------------------------------


def written_series(count: int) -> dict[str, Any]:
    return {
        "name": "result",
        "columns": ["time", "written"],
        "values": [["1970-01-01T00:00:00Z", count]],
    }


def test_points_written_sums_every_statement() -> None:
    body = {
        "results": [
            {"statement_id": 0, "series": [written_series(42)]},
            {"statement_id": 1, "series": [written_series(8)]},
            {"statement_id": 2, "series": [written_series(0)]},
            {"statement_id": 3},
        ]
    }
    assert _points_written(body, "plant") == 50


def test_points_written_reads_the_written_column_wherever_it_is() -> None:
    series = {"name": "result", "columns": ["written", "time"], "values": [[3, 0], [4, 0]]}
    assert _points_written({"results": [{"statement_id": 0, "series": [series]}]}, "p") == 7


def test_a_statement_error_raises() -> None:
    body = {
        "results": [
            {"statement_id": 0, "series": [written_series(42)]},
            {"statement_id": 1, "error": "database not found: rollup"},
        ]
    }
    with pytest.raises(QueryError, match=r"plant: statement 1: database not found: rollup"):
        _points_written(body, "plant")


def test_a_transient_statement_error_raises_transient() -> None:
    body = {"results": [{"statement_id": 0, "error": "engine is closed"}]}
    with pytest.raises(TransientEngineError):
        _points_written(body, "plant")


@pytest.mark.parametrize("body", [None, [], {"error": "x"}, {"results": None}])
def test_a_malformed_body_raises_an_engine_error(body: Any) -> None:
    with pytest.raises(EngineError, match="malformed response"):
        _points_written(body, "plant")


@pytest.mark.parametrize(
    "body",
    [
        {"results": ["oops"]},
        {"results": [{"series": [{"columns": ["written"], "values": [["many"]]}]}]},
    ],
    ids=["result-not-object", "written-not-number"],
)
def test_a_malformed_result_raises_an_engine_error(body: Any) -> None:
    with pytest.raises(EngineError):
        _points_written(body, "plant")


def test_a_null_series_list_is_no_series() -> None:
    assert _points_written({"results": [{"statement_id": 0, "series": None}]}, "plant") == 0


CONNECTION = InfluxDB1Connection(kind="influxdb1", url="http://influx.example:8086")


# --- the table of 1.x error texts --------------------------------------------------------------

# Texts as influxdb 1.x's source writes them (paths under github.com/influxdata/influxdb), with
# the status they arrive with (None: a statement error inside a 200) and what they are.
ONE_X_TEXTS: list[tuple[int | None, str, type[EngineError]]] = [
    # errors.go / services/httpd/handler.go serveWrite: an unknown RP is any other error → 500.
    (500, "retention policy not found: one_year", QueryError),
    (None, "retention policy not found: one_year", QueryError),
    (None, "retention policy not found: telegraf.one_year", QueryError),  # coordinator
    (404, 'database not found: "telegraf"', QueryError),
    (None, "database not found: telegraf", QueryError),
    (500, "database does not exist", QueryError),  # services/meta/errors.go
    (None, "default retention policy not set for: telegraf", QueryError),
    (400, "partial write: points beyond retention policy dropped=3", QueryError),
    (
        400,
        'partial write: field type conflict: input field "f" on measurement "m" is type '
        "string, already exists as type float dropped=1",
        QueryError,
    ),
    (400, "partial write: max-series-per-database limit exceeded: (1000000) dropped=1", QueryError),
    (None, "max-select-point limit exceeed: (10000/10000)", QueryError),
    (None, "max-select-series limit exceeded: (5/4)", QueryError),
    (None, "max-select-buckets limit exceeded: (10001/10000)", QueryError),
    (None, "query-timeout limit exceeded", QueryError),
    (None, "max-concurrent-queries limit exceeded(4, 4)", TransientEngineError),
    (500, "engine is closed", TransientEngineError),
    (None, "[shard 12] engine is closed", TransientEngineError),
    (None, "index is closing", TransientEngineError),
    (None, "tsdb: series file closed", TransientEngineError),
    (None, "tsdb: series partition closed", TransientEngineError),
    (500, "WAL closed", TransientEngineError),
    (500, "write failed", TransientEngineError),  # coordinator/points_writer.go: by its status
    (500, "timeout", TransientEngineError),  # coordinator/points_writer.go ErrTimeout on /write
    (503, "request throttled, queue full", TransientEngineError),
    (503, "request throttled, exceeds timeout", TransientEngineError),
]


@pytest.mark.parametrize(("status", "message", "kind"), ONE_X_TEXTS)
def test_each_known_1x_text_is_classified(
    status: int | None, message: str, kind: type[EngineError]
) -> None:
    assert classify(status, message) is kind


@pytest.mark.parametrize(
    "message",
    [
        "retention policy not found: one_year",
        "database not found: telegraf",
        "database does not exist",
    ],
)
@pytest.mark.parametrize("status", [None, 404, 500])
def test_a_missing_database_or_policy_is_permanent_whatever_the_status(
    status: int | None, message: str
) -> None:
    cls = classify(status, message)
    assert cls is QueryError
    assert not cls("x").transient
    assert explain(message) == f"{message} (create it with `tierflow apply`)"


async def test_a_missing_retention_policy_on_write_names_it_and_suggests_apply() -> None:
    # The answer 1.6.7 gives to POST /write?db=d&rp=nope (seen).
    seen = MockResponse(500, b'{"error":"retention policy not found: nope"}\n')
    engine = InfluxQLEngine("plant", CONNECTION, transport=MockTransport(lambda request: seen))
    with pytest.raises(EngineError) as raised:
        await engine.write(b"m f=1 1", database="d", retention_policy="nope")
    error = raised.value
    assert type(error) is QueryError
    assert not error.transient
    assert str(error) == (
        "connection plant: HTTP 500: retention policy not found: nope "
        "(create it with `tierflow apply`)"
    )


def test_a_missing_retention_policy_in_a_statement_names_it_and_suggests_apply() -> None:
    body = {"results": [{"statement_id": 0, "error": "retention policy not found: nope"}]}
    with pytest.raises(QueryError) as raised:
        _points_written(body, "plant")
    assert str(raised.value) == (
        "connection plant: statement 0: retention policy not found: nope "
        "(create it with `tierflow apply`)"
    )


@pytest.mark.parametrize(
    ("message", "fix"),
    [
        ("partial write: points beyond retention policy dropped=3", "older than the retention"),
        ("partial write: max-values-per-tag limit exceeded (100000/100000)", "influxd's config"),
        ("max-select-point limit exceeed: (10000/10000)", "smaller catchup_chunk"),
        ("default retention policy not set for: telegraf", "name the retention policy"),
    ],
)
def test_texts_the_user_can_fix_say_how(message: str, fix: str) -> None:
    assert explain(message).startswith(message + " (")
    assert fix in explain(message)


def test_texts_without_a_fix_are_left_as_the_server_wrote_them() -> None:
    for message in ("engine is closed", "error parsing query: found FROM", "something new"):
        assert explain(message) == message
