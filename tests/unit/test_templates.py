"""Quoting filters, the sandboxed environment, and the shipped downsample template.

Every literal is checked with `scan_quoted`, a decoder written here from InfluxQL 1.x's scanner
(influxdata/influxql `scanner.go`: `reader.read` and `ScanString`), not from tierflow's quoting.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tierflow
from tierflow._config import Config, parse_config
from tierflow._engines import dialect_named
from tierflow._engines.influxql._literals import (
    influxql_duration,
    influxql_function,
    influxql_ident,
    influxql_string,
    influxql_time,
)
from tierflow._errors import TemplateError
from tierflow._jobs import render_job
from tierflow._planner import Batch
from tierflow._templates import QueryLiteral, _environment, render
from tierflow._windows import Window

# --- an independent decoder for InfluxQL quoted strings and identifiers -----------------------


class BadLiteral(ValueError):
    """The InfluxQL scanner would return BADSTRING or BADESCAPE here."""


# What follows a backslash inside quotes, and what it stands for. Anything else is BADESCAPE.
ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n"}


def scan_quoted(text: str, pos: int = 0) -> tuple[str, int]:
    """Decode the quoted literal that opens at `text[pos]`; return its value and the index just
    past its closing quote.

    Besides `ScanString`'s rules (escapes above, raw newline or end of input → bad string), the
    scanner's rune reader folds `\\r` and `\\r\\n` into `\\n` and uses NUL as its end-of-input
    marker, so a raw CR or NUL inside quotes also makes a bad string on the server.
    """
    quote = text[pos]
    if quote not in "'\"":
        raise BadLiteral(f"no quote at {pos}: {text[pos : pos + 10]!r}")
    value: list[str] = []
    i = pos + 1
    while True:
        if i >= len(text) or text[i] == "\x00":
            raise BadLiteral("unterminated literal")
        ch = text[i]
        if ch == quote:
            return "".join(value), i + 1
        if ch in "\n\r":
            raise BadLiteral("raw line break inside a literal")
        if ch == "\\":
            escaped = text[i + 1] if i + 1 < len(text) else ""
            if escaped not in ESCAPES:
                raise BadLiteral(f"bad escape \\{escaped}")
            value.append(ESCAPES[escaped])
            i += 2
            continue
        value.append(ch)
        i += 1


def decode(literal: str) -> str:
    """The value of a literal that must be exactly one quoted token."""
    value, end = scan_quoted(literal)
    if end != len(literal):
        raise BadLiteral(f"literal ends at {end}, text goes on: {literal[end:]!r}")
    return value


def literals(statement: str) -> list[tuple[str, str]]:
    """Every quoted literal of a statement, in order, as (quote, decoded value)."""
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(statement):
        if statement[i] in "'\"":
            value, end = scan_quoted(statement, i)
            found.append((statement[i], value))
            i = end
        else:
            i += 1
    return found


def skeleton(statement: str) -> str:
    """The statement with every quoted literal replaced by a placeholder of its kind."""
    parts: list[str] = []
    i = 0
    while i < len(statement):
        ch = statement[i]
        if ch in "'\"":
            _, i = scan_quoted(statement, i)
            parts.append(f"{ch}?{ch}")
        else:
            parts.append(ch)
            i += 1
    return "".join(parts)


def test_decoder_follows_the_scanner() -> None:
    assert decode(r"'a\\b\"c\'d\ne'") == "a\\b\"c'd\ne"
    assert decode('"cpu"') == "cpu"
    assert decode("''") == ""
    for bad in ["'a", "'a\\t'", "'a\nb'", "'a\rb'", "'a\x00b'", "'a\\", "'a'b'"]:
        with pytest.raises(BadLiteral):
            decode(bad)
    assert skeleton('SELECT "a\\"b" FROM \'x\' ') == "SELECT \"?\" FROM '?' "


# A raw CR or NUL cannot be written inside InfluxQL quotes at all (see `scan_quoted`); they are
# left out here and covered by the xfail tests below.
safe_text = st.text(st.characters(exclude_characters="\r\x00"))
nasty = st.sampled_from(
    [
        "'",
        '"',
        "\\",
        "\\\\'",
        "a\\",
        "x' OR 'a'='a",
        'cpu"; DROP DATABASE "raw',
        "cpu\n; DROP DATABASE raw; --",
        "\\n",
        "é ☃ 𝔘 \u2028 \t",
        "'; DROP MEASUREMENT cpu; SELECT '",
        "/* */ -- ",
    ]
)
values = st.one_of(nasty, safe_text)


@given(values)
def test_string_round_trips_as_one_token(value: str) -> None:
    literal = influxql_string(value)
    assert isinstance(literal, QueryLiteral)
    assert literal.startswith("'")
    assert decode(literal) == value


@given(values.filter(bool))
def test_ident_round_trips_as_one_token(name: str) -> None:
    literal = influxql_ident(name)
    assert isinstance(literal, QueryLiteral)
    assert literal.startswith('"')
    assert decode(literal) == name


@given(values)
def test_a_literal_stays_one_token_among_others(value: str) -> None:
    statement = f"SELECT {influxql_ident(value or 'x')} FROM x WHERE t = {influxql_string(value)}"
    assert skeleton(statement) == "SELECT \"?\" FROM x WHERE t = '?'"
    assert literals(statement) == [('"', value or "x"), ("'", value)]


def test_carriage_return_is_refused() -> None:
    with pytest.raises(TemplateError):
        influxql_string("a\rb")


def test_nul_is_refused() -> None:
    with pytest.raises(TemplateError):
        influxql_string("a\x00b")


def test_quoting_by_hand() -> None:
    assert influxql_ident("cpu") == '"cpu"'
    assert influxql_ident('we"ird') == '"we\\"ird"'
    assert influxql_ident("back\\slash") == '"back\\\\slash"'
    assert influxql_string("it's") == "'it\\'s'"
    assert influxql_string("two\nlines") == "'two\\nlines'"
    assert influxql_string("") == "''"
    assert influxql_string(5) == "'5'"
    assert influxql_ident(1.5) == '"1.5"'


@pytest.mark.parametrize(
    "value", [None, True, b"cpu", ["cpu"], {"a": 1}, datetime(2026, 1, 1, tzinfo=UTC)]
)
def test_quoting_refuses_non_text(value: object) -> None:
    with pytest.raises(TemplateError):
        influxql_ident(value)
    with pytest.raises(TemplateError):
        influxql_string(value)


def test_empty_identifier_is_refused() -> None:
    with pytest.raises(TemplateError):
        influxql_ident("")


# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 3, 1, 5, tzinfo=UTC), "'2026-03-01T05:00:00Z'"),
        (datetime(2026, 3, 1, 5, 0, 0, 250, tzinfo=UTC), "'2026-03-01T05:00:00.000250Z'"),
        (
            datetime(2026, 3, 1, 7, 30, tzinfo=timezone(timedelta(hours=2, minutes=30))),
            "'2026-03-01T05:00:00Z'",
        ),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "'1969-12-31T23:59:59Z'"),
    ],
)
def test_time_literal(moment: datetime, expected: str) -> None:
    assert influxql_time(moment) == expected


@given(st.datetimes(timezones=st.timezones()))
def test_time_round_trips(moment: datetime) -> None:
    decoded = decode(influxql_time(moment))
    assert decoded.endswith("Z")
    parsed = datetime.fromisoformat(decoded)
    assert parsed.utcoffset() == timedelta(0)
    # Not `parsed == moment`: Python never equates an ambiguous (fold) local time with another
    # zone's time, so compare instants.
    assert parsed == moment.astimezone(UTC)


def test_time_refuses_non_datetimes() -> None:
    with pytest.raises(TemplateError):
        influxql_time("2026-03-01T00:00:00Z")


def test_time_refuses_naive_with_template_error() -> None:
    with pytest.raises(TemplateError):
        influxql_time(datetime(2026, 3, 1))  # noqa: DTZ001 - the naive input is the point


# --- durations ---------------------------------------------------------------------------------

# Unit sizes in microseconds, from InfluxQL's duration units, largest first.
UNIT_US = {"w": 604_800 * 10**6, "d": 86_400 * 10**6, "h": 3_600 * 10**6, "m": 60 * 10**6}
UNIT_US |= {"s": 10**6, "ms": 1_000, "u": 1}


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(minutes=120), "2h"),
        (timedelta(days=7), "1w"),
        (timedelta(days=14), "2w"),
        (timedelta(days=8), "8d"),
        (timedelta(days=1), "1d"),
        (timedelta(hours=25), "25h"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(seconds=90), "90s"),
        (timedelta(seconds=61), "61s"),
        (timedelta(microseconds=1), "1u"),
        (timedelta(microseconds=1001), "1001u"),
        (timedelta(0), "0s"),
    ],
)
def test_duration_literal(delta: timedelta, expected: str) -> None:
    assert influxql_duration(delta) == expected


@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=5000)))
def test_duration_is_exact_and_uses_the_largest_unit(delta: timedelta) -> None:
    literal = influxql_duration(delta)
    match = re.fullmatch(r"([1-9][0-9]*)(w|d|h|m|s|ms|u)", literal)
    assert match is not None, literal
    count, unit = int(match[1]), match[2]
    micros = delta.days * 86_400 * 10**6 + delta.seconds * 10**6 + delta.microseconds
    assert count * UNIT_US[unit] == micros
    larger = list(UNIT_US)[: list(UNIT_US).index(unit)]
    assert all(micros % UNIT_US[bigger] for bigger in larger)


@pytest.mark.parametrize("value", ["1h", 3600, None])
def test_duration_refuses_non_timedeltas(value: object) -> None:
    with pytest.raises(TemplateError):
        influxql_duration(value)


# --- functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mean", "max", "min", "sum", "count", "last", "first"])
def test_known_functions_pass(name: str) -> None:
    assert influxql_function(name) == name
    assert isinstance(influxql_function(name), QueryLiteral)


@pytest.mark.parametrize(
    "name", ["MEAN", "drop", "mean(x)); DROP DATABASE raw; --", "", "percentile", 3]
)
def test_unknown_functions_are_refused(name: object) -> None:
    with pytest.raises(TemplateError):
        influxql_function(name)


# --- the finalize guard ------------------------------------------------------------------------


def render_source(source: str, **context: Any) -> str:
    env = _environment(jinja2.DictLoader({"t.j2": source}))
    return env.get_template("t.j2").render(context)


@pytest.mark.parametrize(
    "source",
    [
        "{{ name }}",
        '{{ "constant" }}',
        "{{ none }}",
        "{{ flag }}",
        "{{ ratio }}",
        "{{ name | influxql_ident ~ 'x' }}",
        "{{ name | influxql_ident | upper }}",
        "{{ name | influxql_string | replace('a', 'b') }}",
        "{{ (name | influxql_ident)[1:] }}",
        "{{ [name | influxql_ident] | join(',') }}",
        "SELECT 1 FROM x WHERE a = {{ name | influxql_string }} AND b = {{ name }}",
    ],
)
def test_unquoted_values_do_not_render(source: str) -> None:
    with pytest.raises(TemplateError, match="without a quoting filter"):
        render_source(source, name="cpu", none=None, flag=True, ratio=1.5)


def test_quoted_values_and_ints_render() -> None:
    text = render_source(
        "SELECT {{ f | influxql_function }}({{ n | influxql_ident }}) LIMIT {{ limit }}",
        f="mean",
        n="usage",
        limit=10,
    )
    assert text == 'SELECT mean("usage") LIMIT 10'


def test_builtin_render_wraps_unknown_templates() -> None:
    with pytest.raises(TemplateError):
        render(dialect_named("influxql"), "no-such", {})


# --- the shipped downsample template -----------------------------------------------------------

UTC_START = datetime(2026, 1, 1, tzinfo=UTC)


def make_config(*, tiers: dict[str, str] | None = None, **job: Any) -> Config:
    buckets = tiers or {"raw": "telegraf/autogen", "hourly": "telegraf_1h/one_year"}
    body: dict[str, Any] = {
        "kind": "downsample",
        "source": "raw",
        "dest": "hourly",
        "measurements": ["cpu"],
        "every": "1h",
        "start": UTC_START,
        "aggregates": {"usage_user": ["mean", "max"]},
    }
    body.update(job)
    if "cron" in job:
        del body["every"]
    raw = {
        "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
        "tiers": {
            name: {"connection": "plant", "bucket": bucket} for name, bucket in buckets.items()
        },
        "jobs": {"j": body},
    }
    return parse_config(raw, Path("t.toml"))


def hour(h: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 3, day, h, minute, tzinfo=UTC)


def batch(*bounds: tuple[datetime, datetime]) -> Batch:
    return Batch(tuple(Window(start, stop) for start, stop in bounds))


def test_simple_job_renders_exactly() -> None:
    query = render_job(make_config(), "j", batch((hour(5), hour(6))))
    assert query.text == (
        'SELECT mean("usage_user") AS "usage_user_mean", max("usage_user") AS "usage_user_max" '
        'INTO "telegraf_1h"."one_year"."cpu" FROM "telegraf"."autogen"."cpu" '
        "WHERE time >= '2026-03-01T05:00:00Z' AND time < '2026-03-01T06:00:00Z' "
        "GROUP BY time(1h), *"
    )
    assert query.template == "influxql/downsample.influxql.j2"


def test_several_measurements_give_semicolon_separated_statements() -> None:
    config = make_config(
        tiers={"raw": "raw", "rollup": "rollup"},
        dest="rollup",
        measurements=["cpu", "mem"],
        aggregates={"used": ["last"]},
    )
    query = render_job(config, "j", batch((hour(5), hour(6))))
    where = "WHERE time >= '2026-03-01T05:00:00Z' AND time < '2026-03-01T06:00:00Z'"
    assert query.text == (
        f'SELECT last("used") AS "used_last" INTO "rollup".."cpu" FROM "raw".."cpu" {where} '
        "GROUP BY time(1h), *; "
        f'SELECT last("used") AS "used_last" INTO "rollup".."mem" FROM "raw".."mem" {where} '
        "GROUP BY time(1h), *"
    )


def test_tags_filter() -> None:
    config = make_config(tags={"host": "web-1", "region": "eu"}, aggregates={"x": ["sum"]})
    query = render_job(config, "j", batch((hour(5), hour(6))))
    assert query.text == (
        'SELECT sum("x") AS "x_sum" INTO "telegraf_1h"."one_year"."cpu" '
        'FROM "telegraf"."autogen"."cpu" '
        "WHERE time >= '2026-03-01T05:00:00Z' AND time < '2026-03-01T06:00:00Z' "
        "AND \"host\" = 'web-1' AND \"region\" = 'eu' GROUP BY time(1h), *"
    )


def test_into_renames_the_destination() -> None:
    config = make_config(
        tiers={"raw": "db", "rollup": "db"},
        dest="rollup",
        into="{{ measurement }}_1h",
        aggregates={"x": ["max"]},
    )
    query = render_job(config, "j", batch((hour(5), hour(6))))
    assert query.text == (
        'SELECT max("x") AS "x_max" INTO "db".."cpu_1h" FROM "db".."cpu" '
        "WHERE time >= '2026-03-01T05:00:00Z' AND time < '2026-03-01T06:00:00Z' "
        "GROUP BY time(1h), *"
    )


def test_into_with_a_hostile_measurement_stays_one_identifier() -> None:
    hostile = 'cpu"; DROP DATABASE "db'
    config = make_config(
        tiers={"raw": "db", "rollup": "db"},
        dest="rollup",
        measurements=[hostile],
        into="{{ measurement }}_1h",
        aggregates={"x": ["max"]},
    )
    text = render_job(config, "j", batch((hour(5), hour(6)))).text
    assert skeleton(text).startswith('SELECT max("?") AS "?" INTO "?".."?" FROM "?".."?" WHERE')
    assert ('"', hostile + "_1h") in literals(text)


def test_coalesced_batch_spans_its_windows_with_one_bucket_per_window() -> None:
    config = make_config(every="15m", catchup_chunk="1h", aggregates={"x": ["mean"]})
    quarter = [hour(0, 15 * i) for i in range(4)]
    query = render_job(config, "j", batch(*pairwise(quarter)))
    assert query.text.endswith(
        "WHERE time >= '2026-03-01T00:00:00Z' AND time < '2026-03-01T00:45:00Z' "
        "GROUP BY time(15m), *"
    )


@pytest.mark.parametrize(
    ("cron", "window", "group_by"),
    [
        ("30 * * * *", (hour(5, 30), hour(6, 30)), "GROUP BY time(1h, 30m), *"),
        ("0 6 * * *", (hour(6), hour(6, day=2)), "GROUP BY time(1d, 6h), *"),
        # 1970-01-01 was a Thursday, so Monday-aligned weeks start 4 days into epoch weeks.
        ("0 0 * * 1", (hour(0, day=2), hour(0, day=9)), "GROUP BY time(1w, 4d), *"),
        ("0 * * * *", (hour(5), hour(6)), "GROUP BY time(1h), *"),
    ],
)
def test_group_by_offset_matches_the_window_alignment(
    cron: str, window: tuple[datetime, datetime], group_by: str
) -> None:
    query = render_job(make_config(cron=cron), "j", batch(window))
    assert query.text.endswith(group_by)


def test_hash_follows_the_text_and_version_is_stable() -> None:
    config = make_config()
    first = render_job(config, "j", batch((hour(5), hour(6))))
    again = render_job(config, "j", batch((hour(5), hour(6))))
    other = render_job(config, "j", batch((hour(6), hour(7))))
    assert first == again
    assert first.hash == again.hash
    assert first.hash != other.hash
    assert first.hash == hashlib.sha256(first.text.encode()).hexdigest()[:16]
    assert first.template_version == other.template_version
    template = Path(tierflow.__file__).parent / "_engines/influxql/templates/downsample.influxql.j2"
    assert first.template_version == hashlib.sha256(template.read_bytes()).hexdigest()[:12]


# Config values come from TOML, which cannot hold lone surrogates (pydantic refuses them too).
config_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\r\x00")
config_values = st.one_of(nasty, st.text(config_chars))
names = st.one_of(nasty, st.text(config_chars, min_size=1))
databases = names.filter(lambda name: "/" not in name)


@settings(max_examples=60, deadline=None)
@given(
    measurement=names,
    field=names,
    tags=st.dictionaries(names, config_values, max_size=3),
    source_db=databases,
    dest_db=databases,
    policy=names,
)
def test_hostile_values_leave_the_statement_structure_intact(
    measurement: str, field: str, tags: dict[str, str], source_db: str, dest_db: str, policy: str
) -> None:
    window = batch((hour(5), hour(6)))
    hostile = make_config(
        tiers={"raw": f"{source_db}/{policy}", "rollup": dest_db},
        dest="rollup",
        measurements=[measurement],
        aggregates={field: ["mean"]},
        tags=tags,
    )
    benign = make_config(
        tiers={"raw": "src/rp", "rollup": "dst"},
        dest="rollup",
        measurements=["m"],
        aggregates={"f": ["mean"]},
        tags={f"k{i}": "v" for i in range(len(tags))},
    )
    text = render_job(hostile, "j", window).text
    assert skeleton(text) == skeleton(render_job(benign, "j", window).text)
    tag_literals = [lit for key, value in tags.items() for lit in (('"', key), ("'", value))]
    assert literals(text) == [
        ('"', field),
        ('"', f"{field}_mean"),
        ('"', dest_db),
        ('"', measurement),
        ('"', source_db),
        ('"', policy),
        ('"', measurement),
        ("'", "2026-03-01T05:00:00Z"),
        ("'", "2026-03-01T06:00:00Z"),
        *tag_literals,
    ]
