"""One status→exception table for every engine, refined by each engine's known server texts."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from tierflow._errors import AuthError, EngineError, QueryError, TransientEngineError

__all__ = [
    "LINE_REFUSED",
    "ErrorTable",
    "KnownError",
    "recognise",
    "retry_after_seconds",
    "server_message",
    "with_fix",
]

#: Overload and server errors; proxies in between add 502/504, 408 and 429.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The request itself was refused: bad syntax, unknown target, too large, unprocessable.
QUERY_STATUSES = frozenset({400, 404, 413, 422})
AUTH_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class KnownError:
    """One error text a server sends: a pattern of it (a regular expression, matched against
    the lowercased message), what kind of failure it is, and how to fix it when the user can."""

    pattern: str
    error: type[EngineError]
    fix: str = ""
    #: The text decides whatever the HTTP status says (the status alone would mislead: e.g.
    #: 1.x answers a missing retention policy with 500, 2.x a full query queue with 400).
    decisive: bool = False


def recognise(table: Sequence[KnownError], message: str) -> KnownError | None:
    """The first entry of `table` whose pattern the message contains."""
    lowered = message.lower()
    return next((known for known in table if re.search(known.pattern, lowered)), None)


def with_fix(table: Sequence[KnownError], message: str) -> str:
    """The server's message, followed by how to fix it when `table` knows."""
    known = recognise(table, message)
    return f"{message} ({known.fix})" if known is not None and known.fix else message


@dataclass(frozen=True, slots=True)
class ErrorTable:
    """Which `EngineError` a failure is: the shared status table, with an engine's own texts.

    Order: 401/403 are auth errors; a decisive text wins over the status; then the status
    (transient, query, or a plain engine error); `status` None (an error reported inside a 200:
    a 1.x statement error, a 2.x error table) is decided by the text, else a query error."""

    known: tuple[KnownError, ...] = ()

    def classify(self, status: int | None, message: str) -> type[EngineError]:
        if status in AUTH_STATUSES:
            return AuthError
        known = recognise(self.known, message)
        if known is not None and known.decisive:
            return known.error
        if status in TRANSIENT_STATUSES:
            return TransientEngineError
        if status in QUERY_STATUSES:
            return QueryError
        if status is None:
            return known.error if known is not None else QueryError
        return EngineError

    def explain(self, message: str) -> str:
        """The server's message, followed by how to fix it when the engine's table knows."""
        return with_fix(self.known, message)


def retry_after_seconds(header: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; an HTTP date is ignored)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def server_message(raw: bytes) -> str:
    """The server's own error message: `message` (2.x's `{"code", "message"}`) or `error`
    (1.x, 3.x) of a JSON or MessagePack body (1.x answers in the format asked for), else the
    start of the body. 3.x's refused lines (`data`: one `{"line_number", "error_message",
    "original_line"}`, or a list of them for a partial write) follow the error, each named by
    its line number in the body (`LINE_REFUSED`)."""
    body = _decoded(raw)
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key]) + _refused_lines(body.get("data"))
    return raw[:200].decode("utf-8", "replace").strip()


#: How `server_message` names a line 3.x refused: its 1-based number in the body sent.
LINE_REFUSED = re.compile(r"; line (\d+) of the body: ")
#: Refused lines named in one message at most (3.x lists every one of a partial write).
_LINES_SHOWN = 3


def _refused_lines(data: Any) -> str:
    lines = data if isinstance(data, list) else [data]
    said = [
        f"; line {line['line_number']} of the body: {line.get('error_message', '')}"
        + (f" ({line['original_line']!r})" if isinstance(line.get("original_line"), str) else "")
        for line in lines
        if isinstance(line, dict) and isinstance(line.get("line_number"), int)
    ]
    more = len(said) - _LINES_SHOWN
    return "".join(said[:_LINES_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
