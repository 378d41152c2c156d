"""InfluxDB 2.x failures mapped onto tierflow's error tree, and how each says to fix itself.

The texts are 2.x's own (paths in influxdata/influxdb, branch 2.7), with the status its error
handler gives their code (kit/transport/http/error_handler.go); None is an error table inside a
200 query stream."""

from __future__ import annotations

import pytest

from tierflow._engines.flux._engine import classify, explain
from tierflow._errors import AuthError, EngineError, QueryError, TransientEngineError

APPLY = "(create it with `tierflow apply`)"

TWO_X_TEXTS: list[tuple[int | None, str, type[EngineError]]] = [
    # query/stdlib/influxdata/influxdb/operators.go, provider.go (codes.NotFound → 404).
    (404, 'failed to initialize execute state: could not find bucket "warm"', QueryError),
    (None, 'could not find bucket "warm"', QueryError),
    (404, 'could not find org "acme"', QueryError),
    # tenant/error_bucket.go, http/write_handler.go (404).
    (404, 'bucket "warm" not found', QueryError),
    (404, "bucket not found", QueryError),
    (None, 'error calling function "to": bucket "warm" not found', QueryError),
    # tenant/error_org.go (404).
    (404, 'organization name "acme" not found', QueryError),
    (404, "organization not found", QueryError),
    # http/write_handler.go: partial writes are 422.
    (
        422,
        "failure writing points to database: partial write: dropped 3 points outside retention "
        "policy of duration 72h0m0s - oldest point m at 2025-08-26T03:26:38Z dropped because it "
        "violates a Retention Policy Lower Bound at 2025-09-02T09:04:10Z dropped=3",
        QueryError,
    ),
    (
        422,
        "failure writing points to database: partial write: field type conflict: input field "
        '"v" on measurement "m" is type integer, already exists as type float dropped=1',
        QueryError,
    ),
    # http/points/points_parser.go: 413 "request too large".
    (413, "unable to read data: points batch is too large", QueryError),
    # http/errors.go, http/write_handler.go, delete_handler.go.
    (401, "unauthorized access", AuthError),
    (403, "insufficient permissions for write", AuthError),
    (403, "insufficient permissions to delete", AuthError),
    # query/control/controller.go: a full queue is codes.ResourceExhausted, answered 400.
    (400, "queue length exceeded", TransientEngineError),
    (500, "query controller shutdown", TransientEngineError),
    # http/write_handler.go: anything else writing is 500 "internal error".
    (500, "unexpected error writing points to database: engine is closed", TransientEngineError),
    (503, "unavailable", TransientEngineError),
    (429, "too many requests", TransientEngineError),
    (None, "failed to execute query: context deadline exceeded", TransientEngineError),
    (None, "cache-max-memory-size exceeded: (1073741824/1073741824)", TransientEngineError),
    (400, 'error @1:1-1:5: undefined identifier "fromm"', QueryError),
    (None, "runtime error @3:6-3:40: pivot: schema collision", QueryError),
    (501, "not implemented", EngineError),
]


@pytest.mark.parametrize(("status", "message", "kind"), TWO_X_TEXTS)
def test_each_known_2x_text_is_classified(
    status: int | None, message: str, kind: type[EngineError]
) -> None:
    assert classify(status, message) is kind


@pytest.mark.parametrize(
    "message",
    [
        'failed to initialize execute state: could not find bucket "warm"',
        'bucket "warm" not found',
        "bucket not found",
    ],
)
@pytest.mark.parametrize("status", [None, 404, 500, 503])
def test_a_missing_bucket_is_permanent_whatever_the_status_and_suggests_apply(
    status: int | None, message: str
) -> None:
    assert classify(status, message) is QueryError
    assert explain(message) == f"{message} {APPLY}"


@pytest.mark.parametrize(
    "message", ['organization name "acme" not found', 'could not find org "acme"']
)
def test_a_missing_org_points_at_the_connection(message: str) -> None:
    assert classify(500, message) is QueryError
    assert explain(message) == f"{message} (check the connection's `org`)"


def test_a_bucket_whose_name_holds_a_busy_word_is_still_missing_not_busy() -> None:
    message = 'could not find bucket "timeout_unavailable"'
    assert classify(None, message) is QueryError
    assert explain(message).endswith(APPLY)


@pytest.mark.parametrize(
    ("message", "fix"),
    [
        (
            "failure writing points to database: partial write: points beyond retention policy "
            "dropped=1",
            "older than the bucket's retention",
        ),
        (
            'partial write: field type conflict: input field "v" on measurement "m" is type '
            "integer, already exists as type float dropped=1",
            "one type per shard",
        ),
    ],
)
def test_writes_the_user_can_fix_say_how(message: str, fix: str) -> None:
    assert explain(message).startswith(message + " (")
    assert fix in explain(message)


def test_texts_without_a_fix_are_left_as_the_server_wrote_them() -> None:
    for message in ("queue length exceeded", "unauthorized access", "something new"):
        assert explain(message) == message
