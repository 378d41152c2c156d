"""The Flux tokenizer and call finder, checked against the official parser where it matters: for
each script, the calls and string values the tokenizer finds must be the ones in libflux's AST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tierflow._engines.flux._syntax import (
    FluxSyntaxError,
    Kind,
    calls,
    parse_time,
    statements,
    tokenize,
)

__all__ = ["flux_checker"]


def kinds(script: str) -> list[tuple[Kind, str]]:
    return [(t.kind, t.text) for t in tokenize(script) if t.kind is not Kind.NEWLINE]


def test_literals_of_every_kind() -> None:
    script = 'x = 1 + 2.5 + .5 + 1h30m + 2026-01-01T00:00:00.5Z + 2026-01-02 + "s" // c'
    assert kinds(script) == [
        (Kind.IDENT, "x"),
        (Kind.OP, "="),
        (Kind.INT, "1"),
        (Kind.OP, "+"),
        (Kind.FLOAT, "2.5"),
        (Kind.OP, "+"),
        (Kind.FLOAT, ".5"),
        (Kind.OP, "+"),
        (Kind.DURATION, "1h30m"),
        (Kind.OP, "+"),
        (Kind.TIME, "2026-01-01T00:00:00.5Z"),
        (Kind.OP, "+"),
        (Kind.TIME, "2026-01-02"),
        (Kind.OP, "+"),
        (Kind.STRING, '"s"'),
    ]


def test_string_escapes_and_interpolation() -> None:
    (plain,) = tokenize(r'"a\"b\\c\nd\te\x41\${x}"')
    assert plain.value == 'a"b\\c\nd\teA${x}'
    (interpolated,) = tokenize('"a${ f("}") }b"')
    assert interpolated.kind is Kind.STRING
    assert interpolated.value is None  # not a plain literal


@pytest.mark.parametrize("bad", ['"abc', r'"a\qb"', '"a${x"', "x = #", r'"\x4"'])
def test_malformed_scripts_are_refused(bad: str) -> None:
    with pytest.raises(FluxSyntaxError):
        tokenize(bad)


def test_a_comment_hides_what_follows_on_its_line_only() -> None:
    assert kinds('a // to(bucket: "x")\nb') == [(Kind.IDENT, "a"), (Kind.IDENT, "b")]


def test_slash_divides_after_an_operand_and_opens_a_regex_elsewhere() -> None:
    assert [k for k, _ in kinds("a / b")] == [Kind.IDENT, Kind.OP, Kind.IDENT]
    assert kinds('r.host =~ /a\\/b"c/')[-1] == (Kind.REGEX, '/a\\/b"c/')
    assert [k for k, _ in kinds("f(x) / 2")][-2:] == [Kind.OP, Kind.INT]


def test_calls_and_named_arguments() -> None:
    script = (
        'import "strings"\n'
        'from(bucket: "hot")\n'
        "  |> range(start: 2026-01-01T00:00:00Z, stop: now())\n"
        '  |> filter(fn: (r) => strings.hasPrefix(v: r.host, prefix: "a"))\n'
        '  |> to(bucket: "warm", org: "o")'
    )
    found = {c.name: c for c in calls(tokenize(script))}
    assert list(found) == ["from", "range", "now", "filter", "strings.hasPrefix", "to"]
    assert [t.text for t in found["range"].args["stop"]] == ["now", "(", ")"]
    assert found["to"].args["bucket"][0].value == "warm"
    assert found["strings.hasPrefix"].args["prefix"][0].value == "a"
    assert found["range"].line == 3


def test_statements_join_continued_lines() -> None:
    script = 'a = from(bucket: "x")\n  |> range(start: -1h)\n\nb = 1 +\n  2\na |> yield()'
    starts = [s[0].text for s in statements(tokenize(script))]
    assert starts == ["a", "b", "a"]


def test_parse_time() -> None:
    (token,) = tokenize("2026-03-04T05:06:07+01:00")
    assert parse_time(token) == datetime(2026, 3, 4, 4, 6, 7, tzinfo=UTC)
    (date,) = tokenize("2026-03-04")
    assert parse_time(date) == datetime(2026, 3, 4, tzinfo=UTC)


SCRIPTS = [
    'from(bucket: "a\\"b") |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-02T00:00:00Z)',
    'import "strings"\nx = strings.toUpper(v: "é ${"q"}")\nx',
    'data = from(bucket: "b")\n  |> range(start: -1h) // comment "with quotes"\n'
    '  |> filter(fn: (r) => r["ta g"] == "v\\\\" and r.h =~ /x\\/y/)\ndata |> count()',
    "f = (x, y=2) => x / y\nf(x: 4.0 / 2.0)",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_tokenizer_agrees_with_the_official_parser(
    flux_checker: FluxChecker, script: str
) -> None:
    tree = flux_checker.ast(script)
    official_calls = [
        node["callee"]["name"]
        if node["callee"]["type"] == "Identifier"
        else node["callee"]["property"]["name"]
        for node in walk(tree)
        if node["type"] == "CallExpression"
    ]
    ours = [c.name.rsplit(".", 1)[-1] for c in calls(tokenize(script))]
    assert sorted(ours) == sorted(official_calls)
    tokens = [t for t in tokenize(script) if t.kind is not Kind.NEWLINE]
    plain = [  # import paths are not string literals in the AST
        t.value
        for before, t in zip([None, *tokens], tokens, strict=False)
        if t.kind is Kind.STRING
        and t.value is not None
        and not (before and before.text == "import")
    ]
    assert set(plain) <= set(string_literals(tree))
