"""Flux quoting filters and every Flux template tierflow ships, judged by the official Flux checker
(`flux-lsp-node`: libflux's parser and type checker): every rendered script must type-check, and
the values its AST holds must be exactly the hostile inputs that went in, never more syntax."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tierflow._config import parse_config
from tierflow._engines.flux import DIALECT as FLUX
from tierflow._engines.flux._literals import (
    flux_aggregate,
    flux_duration,
    flux_ident,
    flux_number,
    flux_string,
    flux_time,
)
from tierflow._errors import TemplateError
from tierflow._jobs import render_fingerprint, render_job
from tierflow._planner import Batch
from tierflow._templates import render_file
from tierflow._windows import Window

__all__ = ["flux_checker"]

CHECKER_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
hostile = st.one_of(
    texts,
    st.sampled_from(
        ['"', "\\", "${x}", '") |> drop() //', "\n", "\r\n", "\x00", "\t", '\\"', "é😀\u2028", "$"]
    ),
    st.lists(st.sampled_from(['"', "\\", "$", "{", "}", "\n", "a", "/", "//", "x"])).map("".join),
)


def value_of(checker: FluxChecker, literal: str) -> Any:
    tree = checker.ast(f"x = {literal}")
    (statement,) = tree["body"]
    return statement["init"]


@CHECKER_SETTINGS
@given(value=hostile)
def test_flux_string_round_trips_through_the_official_parser(
    flux_checker: FluxChecker, value: str
) -> None:
    literal = flux_string(value)
    assert "\n" not in literal
    assert flux_checker.is_valid(f"x = {literal}")
    node = value_of(flux_checker, literal)
    assert node["type"] == "StringLiteral"
    assert node["value"] == value


@CHECKER_SETTINGS
@given(
    delta=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)).map(
        lambda d: d - d % timedelta(microseconds=1)
    )
)
def test_flux_duration_says_the_same_length(flux_checker: FluxChecker, delta: timedelta) -> None:
    node = value_of(flux_checker, flux_duration(delta))
    units = {"h": 3600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1000, "us": 1}
    assert node["type"] == "DurationLiteral"
    total = sum(v["magnitude"] * units[v["unit"]] for v in node["values"])
    assert total == delta // timedelta(microseconds=1)


@CHECKER_SETTINGS
@given(moment=st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001
def test_flux_time_says_the_same_instant(flux_checker: FluxChecker, moment: datetime) -> None:
    node = value_of(flux_checker, flux_time(moment))
    assert node["type"] == "DateTimeLiteral"
    assert datetime.fromisoformat(node["value"]) == moment


@CHECKER_SETTINGS
@given(
    number=st.one_of(
        st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_flux_number_says_the_same_number(flux_checker: FluxChecker, number: float) -> None:
    literal = flux_number(number)
    assert flux_checker.is_valid(f"x = {literal}")
    node = value_of(flux_checker, literal)
    if node["type"] == "UnaryExpression":
        assert node["operator"] == "-"
        node, sign = node["argument"], -1
    else:
        sign = 1
    if isinstance(number, int):
        assert node["type"] == "IntegerLiteral"
        assert sign * int(node["value"]) == number
    else:
        assert node["type"] == "FloatLiteral"
        assert math.copysign(float(node["value"]), sign) == number or number == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1", 2**63, None])
def test_flux_number_refuses_what_is_not_a_finite_number(bad: object) -> None:
    with pytest.raises(TemplateError):
        flux_number(bad)


def test_flux_ident_accepts_only_plain_identifiers() -> None:
    assert flux_ident("site_2") == "site_2"
    for bad in ["2x", "a b", "a-b", "", "and", 'x"', "é", None]:
        with pytest.raises(TemplateError):
            flux_ident(bad)


@pytest.mark.parametrize(
    "name", ["count", "first", "last", "max", "mean", "median", "min", "spread", "stddev", "sum"]
)
def test_every_flux_aggregate_type_checks_inside_aggregate_window(
    flux_checker: FluxChecker, name: str
) -> None:
    script = (
        'from(bucket: "b") |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-02T00:00:00Z)'
        f" |> aggregateWindow(every: 5m, fn: {flux_aggregate(name)}, createEmpty: false)"
    )
    assert flux_checker.is_valid(script)
    with pytest.raises(TemplateError):
        flux_aggregate("mode")


def test_the_checker_can_say_no(flux_checker: FluxChecker) -> None:
    # The checker is only worth asking if it refuses what is wrong.
    assert not flux_checker.is_valid('from(bucket: "b") |> range(start: -1h) |> nosuchfn()')
    assert not flux_checker.is_valid('from(bucket: "b") |> aggregateWindow(every: "5m", fn: mean)')
    assert not flux_checker.is_valid('x = "unterminated')


# -- the shipped templates, rendered for hostile configs -------------------------------------------

SPAN_START = datetime(2026, 11, 1, 0, 7, tzinfo=UTC)


def config_for(job: dict[str, Any], *, hot: str = "hot", warm: str = "warm", org: str = "acme"):
    raw = {
        "connections": {
            "cloud": {
                "kind": "influxdb2",
                "url": "http://127.0.0.1:1",
                "org": org,
                "token": {"env": "T"},
            }
        },
        "tiers": {
            "hot": {"connection": "cloud", "bucket": hot},
            "warm": {"connection": "cloud", "bucket": warm},
        },
        "jobs": {
            "down": {
                "kind": "downsample",
                "source": "hot",
                "dest": "warm",
                "start": SPAN_START,
                **job,
            }
        },
    }
    return parse_config(raw, Path("/nonexistent/tierflow.toml"))


def batch(every: timedelta, count: int) -> Batch:
    return Batch(
        tuple(Window(SPAN_START + i * every, SPAN_START + (i + 1) * every) for i in range(count))
    )


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


def assert_script_holds_exactly(
    checker: FluxChecker,
    script: str,
    measurement: str,
    into: str,
    tags: dict[str, str],
    hot: str,
    warm: str,
    org: str,
    windows: Batch,
) -> None:
    assert checker.is_valid(script), script
    tree = checker.ast(script)
    strings = string_literals(tree)
    # Every value arrives whole, as a string literal; nothing else of it leaks into the syntax.
    for value in (measurement, into, hot, warm, org, *tags, *tags.values()):
        assert value in strings
    calls = [n for n in walk(tree) if n["type"] == "CallExpression"]

    def args(call: dict[str, Any]) -> dict[str, Any]:
        (record,) = call["arguments"] or [{"properties": []}]
        return {p["key"]["name"]: p["value"] for p in record["properties"]}

    by_name: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        if call["callee"]["type"] == "Identifier":
            by_name.setdefault(call["callee"]["name"], []).append(args(call))
    assert {a["bucket"]["value"] for a in by_name["from"]} == {hot}
    assert [(a["bucket"]["value"], a["org"]["value"]) for a in by_name["to"]] == [(warm, org)]
    for bounds in by_name["range"]:
        assert datetime.fromisoformat(bounds["start"]["value"]) == windows.range.start
        assert datetime.fromisoformat(bounds["stop"]["value"]) == windows.range.stop
    measurements = {
        n["right"]["value"]
        for n in walk(tree)
        if n["type"] == "BinaryExpression"
        and n["left"].get("property", {}).get("name") == "_measurement"
    }
    assert measurements == {measurement}


@CHECKER_SETTINGS
@given(
    measurement=names,
    tag_key=names,
    tag_value=names,
    hot=names,
    warm=names,
    org=names,
)
def test_the_downsample_template_holds_hostile_names_exactly(
    flux_checker: FluxChecker,
    measurement: str,
    tag_key: str,
    tag_value: str,
    hot: str,
    warm: str,
    org: str,
) -> None:
    if hot == warm:
        warm += "_w"
    tags = {tag_key: tag_value}
    config = config_for(
        {
            "measurements": [measurement],
            "tags": tags,
            "every": "5m",
            "aggregates": {"temp": ["mean", "median", "count"], "n": ["sum"]},
            "into": "{{ measurement }}_5m",
        },
        hot=hot,
        warm=warm,
        org=org,
    )
    windows = batch(timedelta(minutes=5), 3)
    query = render_job(config, "down", windows)
    assert query.dialect == "flux"
    assert_script_holds_exactly(
        flux_checker, query.text, measurement, f"{measurement}_5m", tags, hot, warm, org, windows
    )
    fingerprint = render_fingerprint(config, "down", windows)
    assert flux_checker.is_valid(fingerprint.text), fingerprint.text


@pytest.mark.parametrize(
    "aggregates",
    [
        {"temp": ["mean"]},
        {"a": ["first", "last"], "b": ["spread", "stddev", "min", "max"]},
        {"online": ["min", "max", "count"], "state": ["first", "last", "count"]},
    ],
)
@pytest.mark.parametrize(
    ("every", "count"),
    [(timedelta(minutes=5), 1), (timedelta(hours=1, minutes=30), 4), (timedelta(days=1), 2)],
)
def test_every_shape_of_downsample_type_checks(
    flux_checker: FluxChecker, aggregates: dict[str, list[str]], every: timedelta, count: int
) -> None:
    config = config_for(
        {
            "measurements": ["a", "b"],
            "every": f"{int(every.total_seconds())}s",
            "aggregates": aggregates,
            "into": "{{ measurement }}_x",
        }
    )
    query = render_job(config, "down", batch(every, count))
    assert flux_checker.is_valid(query.text), query.text
    assert query.text.count("|> to(") == 2
    fingerprint = render_fingerprint(config, "down", batch(every, count)).text
    assert flux_checker.is_valid(fingerprint), fingerprint


def test_the_fingerprint_sums_only_fields_the_job_shows_to_be_numbers() -> None:
    # Flux cannot be asked a field's type cheaply: a field no numbers-only aggregate uses may be
    # a boolean or a string, which `sum` refuses; its selectors are taken per series instead.
    aggregates = {"temp": ["mean", "last"], "online": ["min", "max"], "state": ["last"]}
    config = config_for({"measurements": ["a"], "every": "5m", "aggregates": aggregates})
    tables = render_fingerprint(config, "down", batch(timedelta(minutes=5), 2)).text.split("from(")
    shapes = sorted(
        (
            t.split('r._field == "')[1].split('"')[0],
            t.split("fn: ")[2].split(",")[0],
            "group()" in t,
        )
        for t in tables[1:]
    )
    assert shapes == [
        ("online", "count", True),
        ("online", "max", False),
        ("online", "min", False),
        ("state", "count", True),
        ("state", "last", False),
        ("temp", "count", True),
        ("temp", "last", True),
        ("temp", "sum", True),
    ]


def test_mode_is_refused_for_influxdb2_at_load() -> None:
    from tierflow._errors import ConfigError

    with pytest.raises(ConfigError, match=r"'mode' is not supported on InfluxDB 2\.x"):
        config_for({"measurements": ["a"], "every": "5m", "aggregates": {"t": ["mode"]}})


# -- user templates -------------------------------------------------------------------------------


def test_a_user_template_must_quote_every_value(tmp_path: Path) -> None:
    path = tmp_path / "t.flux.j2"
    path.write_text('from(bucket: "{{ params.site }}")', encoding="utf-8")
    with pytest.raises(TemplateError, match=r"t\.flux\.j2: .*without a quoting filter"):
        render_file(path, "t.flux.j2", {"params": {"site": '") |> drop() //'}}, dialect=FLUX)
    path.write_text("x = {{ params.factor }}", encoding="utf-8")
    with pytest.raises(TemplateError, match="without a quoting filter"):
        render_file(path, "t.flux.j2", {"params": {"factor": 0.5}}, dialect=FLUX)
    path.write_text("{% include 'other.j2' %}", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"t\.flux\.j2"):
        render_file(path, "t.flux.j2", {}, dialect=FLUX)


def test_a_user_template_cannot_reach_python_internals(tmp_path: Path) -> None:
    path = tmp_path / "t.flux.j2"
    path.write_text("{{ params.__class__.__mro__ }}", encoding="utf-8")
    with pytest.raises(TemplateError):
        render_file(path, "t.flux.j2", {"params": {}}, dialect=FLUX)


def test_a_user_template_keeps_its_lines_and_versions_by_source(tmp_path: Path) -> None:
    path = tmp_path / "t.flux.j2"
    path.write_text("x = 1 // {{ params.a | flux_string }}\n\ny = 2\n", encoding="utf-8")
    first = render_file(path, "t.flux.j2", {"params": {"a": "q"}}, dialect=FLUX)
    assert first.text == 'x = 1 // "q"\ny = 2'
    assert first.dialect == "flux"
    again = render_file(path, "t.flux.j2", {"params": {"a": "other"}}, dialect=FLUX)
    assert again.template_version == first.template_version
    path.write_text("x = 1 // {{ params.a | flux_string }}\ny = 3\n", encoding="utf-8")
    assert render_file(
        path, "t.flux.j2", {"params": {"a": "q"}}, dialect=FLUX
    ).template_version != (first.template_version)
