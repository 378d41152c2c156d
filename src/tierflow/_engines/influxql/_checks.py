"""The InfluxQL safety checker (see `tierflow._query_checks` for the rules every dialect keeps):
every statement's WHERE holds exactly the window's time bounds at its top level, every `INTO`
targets the job's dest, and no unreduced rows come back. Read through a small InfluxQL
tokenizer, not regexes over the raw text."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from tierflow._query_checks import Target, UnsafeQueryError
from tierflow._windows import Window, isoformat

__all__ = ["influxql_problems"]

_QL_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<ident>"(?:[^"\\\n]|\\.)*")
  | (?P<string>'(?:[^'\\\n]|\\.)*')
  | (?P<duration>\d+(?:ns|ms|u|µ|s|m|h|d|w)(?![A-Za-z0-9_]))
  | (?P<number>\d+(?:\.\d*)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<regex>/(?:[^/\\\n]|\\.)*/)
  | (?P<op>>=|<=|!=|<>|=~|!~|::|[-+*/%=<>(),.;:&|^])
    """,
    re.VERBOSE | re.DOTALL,
)
_UNESCAPE = {"\\": "\\", '"': '"', "'": "'", "n": "\n"}
# Aggregates and selectors, which make a result one row per GROUP BY bucket (or a bounded few).
_QL_REDUCERS = frozenset(
    {
        "count",
        "distinct",
        "integral",
        "mean",
        "median",
        "mode",
        "spread",
        "stddev",
        "sum",
        "bottom",
        "first",
        "last",
        "max",
        "min",
        "percentile",
        "sample",
        "top",
    }
)
_CLAUSE_ENDS = frozenset({"group", "order", "limit", "offset", "slimit", "soffset", "fill", "tz"})


@dataclass(frozen=True, slots=True)
class _QL:
    kind: str  # ident (bare or quoted), string, duration, number, regex, op
    text: str
    value: str  # identifiers and strings unquoted; keywords lower-cased


def _ql_tokens(text: str) -> list[_QL]:
    out: list[_QL] = []
    pos = 0
    while pos < len(text):
        match = _QL_TOKEN.match(text, pos)
        if match is None:
            raise UnsafeQueryError(f"InfluxQL: unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        raw = match.group()
        pos = match.end()
        if kind in {"space", "comment"}:
            continue
        if kind == "regex" and out and out[-1].kind in {"ident", "number", "string"}:
            raise UnsafeQueryError("InfluxQL: '/' is only allowed around regular expressions")
        if kind in {"ident", "string"} and raw[0] in "\"'":
            value = re.sub(
                r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), "\\" + m.group(1)), raw[1:-1]
            )
            out.append(_QL("ident" if kind == "ident" else "string", raw, value))
        elif kind == "word":
            out.append(_QL("ident", raw, raw))
        else:
            out.append(_QL(kind, raw, raw))
    return out


def _split_statements(tokens: Sequence[_QL]) -> list[list[_QL]]:
    result: list[list[_QL]] = [[]]
    for token in tokens:
        if token.kind == "op" and token.text == ";":
            result.append([])
        else:
            result[-1].append(token)
    return [statement for statement in result if statement]


def _is_word(token: _QL, word: str) -> bool:
    # A keyword is bare; `"time"` quoted is still the time column, `"into"` is a name.
    return token.kind == "ident" and token.text.lower() == word


def influxql_problems(
    text: str, window: Window, dest: Target, require_write: bool
) -> Iterator[str]:
    wrote = False
    for number, statement in enumerate(_split_statements(_ql_tokens(text)), 1):
        where = f"statement {number}"
        if not _is_word(statement[0], "select"):
            yield f"{where}: only SELECT statements may run, not {statement[0].text.upper()}"
            continue
        if any(a.text == "(" and _is_word(b, "select") for a, b in itertools.pairwise(statement)):
            yield f"{where}: subqueries are not supported; bound every SELECT by the window"
            continue
        yield from _time_problems(where, statement, window)
        into = next((i for i, t in enumerate(statement) if _is_word(t, "into")), None)
        if into is not None:
            wrote = True
            yield from _into_problems(where, statement[into + 1 :], dest)
        elif not _ql_reduces(statement):
            yield f"{where}: returns rows to tierflow with neither an aggregate nor LIMIT"
    if require_write and not wrote:
        yield f"no SELECT … INTO: a query job must write to its dest {dest.bucket!r}"


def _ql_reduces(statement: Sequence[_QL]) -> bool:
    for token, following in itertools.pairwise(statement):
        if _is_word(token, "limit"):
            return True
        if token.kind == "ident" and token.text.lower() in _QL_REDUCERS and following.text == "(":
            return True
    return False


def _where_clause(statement: Sequence[_QL]) -> list[_QL] | None:
    start = next((i for i, t in enumerate(statement) if _is_word(t, "where")), None)
    if start is None:
        return None
    clause: list[_QL] = []
    depth = 0
    for token in statement[start + 1 :]:
        depth += {"(": 1, ")": -1}.get(token.text, 0) if token.kind == "op" else 0
        if depth == 0 and token.kind == "ident" and token.text.lower() in _CLAUSE_ENDS:
            break
        clause.append(token)
    return clause


def _time_problems(where: str, statement: Sequence[_QL], window: Window) -> Iterator[str]:
    clause = _where_clause(statement)
    wanted = {">=": window.start, "<": window.stop}
    if clause is None:
        yield (
            f"{where}: no WHERE: it must hold time >= '{isoformat(window.start)}' "
            f"AND time < '{isoformat(window.stop)}'"
        )
        return
    found: dict[str, datetime] = {}
    depth = 0
    for index, token in enumerate(clause):
        if token.kind == "op" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if depth == 0 and _is_word(token, "or"):
            yield f"{where}: OR at the top of WHERE would let rows outside the window through"
        if token.kind != "ident" or token.value.lower() != "time":
            continue
        op = clause[index + 1].text if index + 1 < len(clause) else ""
        value = clause[index + 2] if index + 2 < len(clause) else None
        if depth != 0 or op not in wanted or value is None or value.kind != "string":
            yield (
                f"{where}: time may only appear as time >= '<start>' and time < '<stop>' "
                "at the top of WHERE"
            )
            continue
        if (
            index + 3 < len(clause)
            and clause[index + 3].kind == "op"
            and clause[index + 3].text in "+-"
        ):
            yield f"{where}: time bounds must be plain RFC 3339 literals"
            continue
        if op in found:
            yield f"{where}: time {op} appears twice"
        found[op] = _ql_time(value.value) or window.start.replace(year=1)
    for op, bound in wanted.items():
        if op not in found:
            yield f"{where}: WHERE lacks time {op} '{isoformat(bound)}'"
        elif found[op] != bound:
            yield f"{where}: time {op} is not the window's bound '{isoformat(bound)}'"


def _ql_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _into_problems(where: str, rest: Sequence[_QL], dest: Target) -> Iterator[str]:
    """`INTO [db.][rp.]measurement` (parts may be empty: `"db".."m"` is the default RP)."""
    parts: list[str | None] = [None]
    for token in rest:
        if token.kind == "op" and token.text == ".":
            parts.append(None)
        elif (token.kind == "op" and token.text == ":") or _is_word(token, "measurement"):
            parts[-1] = parts[-1] or ":MEASUREMENT"
        elif token.kind == "ident" and parts[-1] is None and not _is_word(token, "from"):
            parts[-1] = token.value
        else:
            break
    if len(parts) > 3 or parts[-1] is None:
        yield f"{where}: INTO target is not [database.][retention_policy.]measurement"
        return
    database = parts[0] if len(parts) == 3 else dest.database
    policy = parts[-2] if len(parts) >= 2 else None
    if (database, policy or None) != (dest.database, dest.retention_policy):
        shown = ".".join(p or "" for p in parts[:-1])
        yield (f"{where}: INTO {shown or parts[-1]!s} is not the job's dest tier {dest.bucket!r}")
