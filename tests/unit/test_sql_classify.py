"""InfluxDB 3 write refusals mapped onto tierflow's error tree, naming the line refused.

The bodies are 3.x's own (`influxdb3_server/src/http.rs`, `IntoResponse for Error`): with
`accept_partial=false` a refused line answers 400 `{"error": "line protocol parsing error",
"data": {line}}` ("parsing failed for write_lp endpoint" before June 2026), with partial writes
400 (422 when a limit is hit) `{"error": "partial write of line protocol occurred", "data":
[lines]}`; each line `{"error_message", "line_number", "original_line"}` (`WriteLineError`)."""

from __future__ import annotations

import json

import pytest

from tierflow._engines.sql._engine import classify, explain
from tierflow._errors import AuthError, EngineError, QueryError, TransientEngineError
from tierflow._http import server_message

CONFLICT = {
    "error_message": "invalid column type for column 'v', expected "
    "iox::column_type::field::float, got iox::column_type::field::integer",
    "line_number": 2,
    "original_line": "conflict v=3i 3",
}
SYNTAX = {"error_message": "No fields were provided", "line_number": 7, "original_line": "cpu u= 2"}


def body(error: str, data: object = None) -> bytes:
    return json.dumps({"error": error, **({"data": data} if data is not None else {})}).encode()


@pytest.mark.parametrize(
    ("status", "raw", "line", "said"),
    [
        # Current 3.x, accept_partial=false: a type conflict and a plain syntax error.
        (400, body("line protocol parsing error", CONFLICT), 2, "invalid column type"),
        (400, body("line protocol parsing error", SYNTAX), 7, "No fields were provided"),
        # 3.x before June 2026 said it so.
        (400, body("parsing failed for write_lp endpoint", SYNTAX), 7, "No fields"),
        # accept_partial=true (tierflow never asks it, a proxy or an old server might).
        (400, body("partial write of line protocol occurred", [SYNTAX]), 7, "No fields"),
        (422, body("partial write of line protocol occurred", [CONFLICT, SYNTAX]), 2, "column 'v'"),
    ],
)
def test_a_refused_line_is_a_permanent_refusal_naming_the_line(
    status: int, raw: bytes, line: int, said: str
) -> None:
    message = server_message(raw)
    assert classify(status, message) is QueryError
    # Whatever status a proxy puts on it, the text says the server refused the line itself.
    assert classify(503, message) is QueryError
    explained = explain(message)
    assert f"line {line} of the body: " in explained
    assert said in explained
    partial = "partial write" in message
    fix = "kept the body's others" if partial else "nothing of the body was written"
    assert fix in explained


def test_every_refused_line_of_a_partial_write_is_named_up_to_three() -> None:
    lines = [{**SYNTAX, "line_number": n, "original_line": f"l{n}"} for n in range(1, 6)]
    message = server_message(body("partial write of line protocol occurred", lines))
    assert [f"line {n} of the body" in message for n in range(1, 6)] == [True] * 3 + [False] * 2
    assert message.endswith("; and 2 more")
    assert "'l1'" in message


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (400, "incoming write was empty", QueryError),
        (404, "database not found", QueryError),
        (401, '{"error": "the request was not authenticated"}', AuthError),
        (503, "service unavailable", TransientEngineError),
        (429, "this service is overloaded, please try again later", TransientEngineError),
        (500, "internal error", TransientEngineError),
        (501, "not implemented", EngineError),
    ],
)
def test_other_write_answers_keep_their_class(
    status: int, text: str, expected: type[EngineError]
) -> None:
    assert classify(status, server_message(text.encode())) is expected
