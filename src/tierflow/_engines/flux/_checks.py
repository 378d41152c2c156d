"""The Flux safety checker (see `tierflow._query_checks` for the rules every dialect keeps):
every `range()` bounded by exactly the window, every `to()` into the job's dest bucket and org,
nothing else sending data anywhere, and no unreduced result coming back. Read through the Flux
tokenizer (`_syntax`), not regexes over the raw text."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tierflow._engines.flux._syntax import (
    Call,
    Kind,
    Token,
    calls,
    parse_time,
    statements,
    tokenize,
)
from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from tierflow._query_checks import Target

__all__ = ["flux_problems"]

# Calls after which a result holds at most one row per window and series (or a bounded number).
_FLUX_REDUCERS = frozenset(
    {
        "aggregateWindow",
        "count",
        "sum",
        "mean",
        "median",
        "mode",
        "min",
        "max",
        "first",
        "last",
        "spread",
        "stddev",
        "quantile",
        "integral",
        "reduce",
        "histogram",
        "limit",
        "tail",
        "top",
        "bottom",
        "highestMax",
        "lowestMin",
    }
)
_SENDERS = re.compile(r"(^|\.)(post|publish|send|endpoint|notify)$")
_FORBIDDEN_TO_ARGS = ("bucketID", "orgID", "host", "token", "url")


def flux_problems(text: str, window: Window, dest: Target, require_write: bool) -> Iterator[str]:
    tokens = tokenize(text)
    found = calls(tokens)
    ranges = [call for call in found if call.name == "range"]
    if not any(call.name == "from" for call in found):
        yield "no from(): the query reads no bucket"
    if not ranges:
        yield "no range(): every read must be bounded by the window"
    for call in ranges:
        yield from _range_problems(call, window)
    writes = [call for call in found if call.name == "to" or call.name.endswith(".to")]
    for call in writes:
        yield from _to_problems(call, dest)
    for call in found:
        if _SENDERS.search(call.name):
            yield f"line {call.line}: {call.name}() sends data outside the dest tier"
    if require_write and not writes:
        yield f"no to(): a query job must write to its dest bucket {dest.bucket!r}"
    yield from _unreduced_results(tokens)


def _range_problems(call: Call, window: Window) -> Iterator[str]:
    if call.opaque:
        yield f"line {call.line}: range() arguments must be written out as start: and stop:"
        return
    for key, bound in (("start", window.start), ("stop", window.stop)):
        value = call.args.get(key)
        if value is None:
            yield f"line {call.line}: range() has no {key}: it must be {isoformat(bound)}"
            continue
        moment = parse_time(value[0]) if len(value) == 1 else None
        if moment is None:
            shown = "".join(t.text for t in value)
            yield (
                f"line {call.line}: range({key}: {shown}) is not an absolute time; it must be "
                f"the window's {key}, {isoformat(bound)}"
            )
        elif moment != bound:
            yield (
                f"line {call.line}: range({key}: {value[0].text}) is not the window's {key} "
                f"{isoformat(bound)}"
            )


def _to_problems(call: Call, dest: Target) -> Iterator[str]:
    where = f"line {call.line}: {call.name}()"
    if call.opaque:
        yield f"{where} arguments must be written out as bucket: and org:"
        return
    for key in _FORBIDDEN_TO_ARGS:
        if key in call.args:
            yield f"{where} sets {key}: write to the dest tier by bucket (and org) name only"
    bucket = _string_arg(call, "bucket")
    if bucket is None:
        yield f"{where} needs bucket: set to the dest bucket {dest.bucket!r} as a string literal"
    elif bucket != dest.bucket:
        yield f"{where} writes to bucket {bucket!r}, not the job's dest bucket {dest.bucket!r}"
    if "org" in call.args:
        org = _string_arg(call, "org")
        if org is None or (dest.org is not None and org != dest.org):
            yield f"{where} org must be the dest tier's org {dest.org!r} as a string literal"


def _string_arg(call: Call, key: str) -> str | None:
    value = call.args.get(key)
    if value is None or len(value) != 1 or value[0].kind is not Kind.STRING:
        return None
    return value[0].value


def _unreduced_results(tokens: Sequence[Token]) -> Iterator[str]:
    """Top-level expressions (results) that reach tierflow with neither aggregation nor limit.
    A result built from variables counts the calls in their definitions too."""
    definitions: dict[str, list[Token]] = {}
    for statement in statements(tokens):
        head = statement[0]
        if head.kind is Kind.IDENT and head.text in {"import", "option", "package", "builtin"}:
            continue
        if head.kind is Kind.IDENT and len(statement) > 1 and statement[1].text == "=":
            definitions[head.text] = statement[2:]
            continue
        if not _reduces(statement, definitions, set()):
            yield (
                f"line {head.line}: this result returns rows to tierflow with neither "
                "aggregation nor limit()"
            )


def _reduces(part: Sequence[Token], definitions: dict[str, list[Token]], seen: set[str]) -> bool:
    if any(call.name.rsplit(".", 1)[-1] in _FLUX_REDUCERS for call in calls(part)):
        return True
    for token in part:
        if token.kind is Kind.IDENT and token.text in definitions and token.text not in seen:
            seen.add(token.text)
            if _reduces(definitions[token.text], definitions, seen):
                return True
    return False
