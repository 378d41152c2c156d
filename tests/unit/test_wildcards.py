"""Measurement patterns: how `measurements = "*"` / `"/regex/"` load (and what is refused, with
the job and key named), what the job definition records, how a pattern is matched, and the 2.x
listing query: what the recording stand-in receives (bounded to the window, the tier's bucket)
judged by the official Flux checker, and how its answer is read. The 1.x listing runs on the
real influxd (tests/integration/test_wildcards.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tests.influx2_standin import TOKEN, StandIn, annotated_csv, influxdb2_connection
from tierflow._config import ArchiveJob, Config
from tierflow._config._patterns import parse_pattern
from tierflow._definitions import job_definition
from tierflow._engines.flux import DIALECT as FLUX
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.influxql._listing import check_query
from tierflow._errors import ConfigError
from tierflow._jobs import render_job
from tierflow._planner import Batch
from tierflow._wildcards import resolve_measurements
from tierflow._windows import Window

__all__ = ["flux_checker"]

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def mapping(**job: Any) -> dict[str, Any]:
    return {
        "connections": {
            "one": {"kind": "influxdb1", "url": "http://influx:8086"},
            "two": {
                "kind": "influxdb2",
                "url": "http://influx2:8086",
                "org": "acme",
                "token": {"env": "INFLUX_TOKEN"},
            },
        },
        "tiers": {
            "hot": {"connection": "one", "bucket": "db/hot"},
            "warm": {"connection": "one", "bucket": "db/warm"},
            "hot2": {"connection": "two", "bucket": "hot"},
            "cold": {"archive": "/tmp/cold"},
        },
        "jobs": {
            "keep": {
                "kind": "archive",
                "source": "hot",
                "dest": "cold",
                "every": "1h",
                "start": "2026-11-01T00:00:00Z",
                **job,
            }
        },
    }


def load(**job: Any) -> Config:
    return Config.from_mapping(mapping(**job))


def refusal(**job: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**job)
    return " ".join(str(caught.value).split())


# -- config ------------------------------------------------------------------------------------


def test_star_and_a_regex_load_as_patterns_and_a_list_as_before() -> None:
    star = load(measurements="*").jobs["keep"]
    assert (star.measurements, star.measurement_pattern) == ((), "*")
    regex = load(measurements="/^cpu_.*/").jobs["keep"]
    assert regex.measurement_pattern == "/^cpu_.*/"
    listed = load(measurements=["cpu", "*"]).jobs["keep"]
    assert (listed.measurements, listed.measurement_pattern) == (("cpu", "*"), None)


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("cpu", "is not a measurement pattern"),
        ("/[a/", "unterminated character set"),
        ("//", 'write "*" for that'),
        ("/cpu(?=_)/", "lookahead/lookbehind assertions"),
        ("/(?<!x)cpu/", "lookahead/lookbehind assertions"),
        ("/(c)\\1/", "backreferences"),
        ("/(?>cpu)/", "atomic groups"),
        ("/cpu*+/", "possessive repeats"),
        ("/cpu\\Z/", "\\Z (RE2 reads only \\z; write $)"),
        ("/(?x)c p u/", "an inline flag other than m or s"),
        ("/(?a)cpu/", "an inline flag other than m or s"),
        ("/(?i)cpu/", "case-insensitive matching (RE2 folds K with the Kelvin sign"),
        ("/c(?i:pu)/", "case-insensitive matching"),
        ("/cpu\\s/", "\\s (RE2's leaves out \\v"),
        ("/cpu{,2}/", "{,n} (RE2 reads it as text"),
        ("/[[:alpha:]]/", "a [ first in a set"),
        ("/[a&&b]/", "&& in a set"),
        ("/[_[:alpha:]]/", "a POSIX class"),
        ("/\\u00e9/", "\\u escapes"),
        ("/(?#note)cpu/", "a comment group"),
        ("/x{1001}/", "a repeat count above 1000"),
    ],
)
def test_a_bad_pattern_is_refused_naming_job_and_key(written: str, reason: str) -> None:
    said = refusal(measurements=written)
    assert f'[jobs.keep] measurements = "{written}":' in said
    assert reason in said


def test_the_pattern_is_not_a_key_of_its_own() -> None:
    said = refusal(measurements=["cpu"], measurement_pattern="*")
    assert '[jobs.keep] measurement_pattern = "*": not a key' in said


def test_an_archive_job_without_measurements_is_refused() -> None:
    assert "[jobs.keep] measurements = []: archive jobs need measurements" in refusal()
    assert "archive jobs need measurements" in refusal(measurements=[])


@pytest.mark.parametrize(
    ("kind", "extra", "why"),
    [
        ("downsample", {"aggregates": {"v": ["mean"]}, "dest": "warm"}, "its aggregates name"),
        ("query", {"template": "q.influxql.j2", "dest": "warm"}, "template decides"),
    ],
)
def test_other_job_kinds_refuse_a_pattern_with_the_reason(
    kind: str, extra: dict[str, Any], why: str
) -> None:
    said = refusal(kind=kind, measurements="*", **extra)
    assert '[jobs.keep] measurements = "*"' in said
    assert why in said


def test_regexes_match_as_influxdb_does_unanchored_and_ascii_classes() -> None:
    names = ["cpu", "cpu_total", "xcpu", "mem", "d1", "d١"]  # the last: an Arabic-Indic digit
    assert parse_pattern("/cpu/").select(names) == ["cpu", "cpu_total", "xcpu"]
    assert parse_pattern("/^cpu$/").select(names) == ["cpu"]
    assert parse_pattern("/^d\\d$/").select(names) == ["d1"]  # RE2's \d is ASCII
    assert parse_pattern("/^[Cc][Pp][Uu]_/").select([*names, "CPU_x"]) == ["CPU_x", "cpu_total"]
    assert parse_pattern("/a\\/b/").select(["a/b", "ab"]) == ["a/b"]
    assert parse_pattern("*").select(["b", "a", "b"]) == ["a", "b"]


# -- what is recorded --------------------------------------------------------------------------


def test_the_definition_records_the_pattern_and_a_list_as_before() -> None:
    assert '"measurements":"*"' in job_definition(load(measurements="*"), "keep").body
    assert '"measurements":"/^c/"' in job_definition(load(measurements="/^c/"), "keep").body
    listed = job_definition(load(measurements=["b", "a"]), "keep").body
    assert '"measurements":["a","b"]' in listed


def test_plan_renders_the_bounded_listing_and_a_run_the_resolved_export() -> None:
    config = load(measurements="*", tags={"site": "s1"})
    batch = Batch((Window(T0, T0 + HOUR),))
    shown = render_job(config, "keep", batch).text
    assert shown == (
        'SHOW MEASUREMENTS ON "db"; SELECT * FROM "db"."hot".… WHERE '
        "time >= '2026-11-01T00:00:00Z' AND time < '2026-11-01T01:00:00Z' AND \"site\" = 's1' "
        "LIMIT 1 (… the names listed that the pattern matches, 50 per statement; the first "
        'request also reads "db"."hot"./^$/, which fails if the database or policy does not '
        "exist)"
    )
    job = config.jobs["keep"]
    assert isinstance(job, ArchiveJob)
    resolved = job.model_copy(update={"measurements": ("cpu", "mem")})
    text = render_job(config, "keep", batch, resolved).text
    assert '"db"."hot"."cpu"' in text
    assert '"db"."hot"."mem"' in text
    assert render_job(config, "keep", batch, job.model_copy()).text == ""


def test_two_archive_jobs_whose_pattern_meets_the_others_list_are_refused() -> None:
    data = mapping(measurements="/^c/")
    data["jobs"]["again"] = {**data["jobs"]["keep"], "measurements": ["cpu", "mem"]}
    with pytest.raises(ConfigError, match=r"both archive measurement\(s\) cpu into"):
        Config.from_mapping(data)
    data["jobs"]["again"]["measurements"] = ["mem"]
    Config.from_mapping(data)


# -- 2.x: the listing query --------------------------------------------------------------------


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn(tokens={TOKEN}, buckets={"hot"})
    await server.start()
    yield server
    await server.stop()


def listing_answer(*names: str) -> bytes:
    # After `group() |> distinct(column: "_measurement")`: one table, no group key, `_value`.
    return annotated_csv([(["_value"], ["string"], [[n] for n in names])], group_key=[[]])


async def test_the_2x_listing_is_bounded_valid_flux_and_read_back(
    standin: StandIn, token_file: Path, flux_checker: FluxChecker
) -> None:
    standin.default_csv = listing_answer("cpu", "mem", 'weird, "name"', "cpu_2")
    data = mapping(measurements="/^c|name/", source="hot2", tags={"site": "s1"})
    data["connections"]["two"] = {
        "kind": "influxdb2",
        "url": standin.url,
        "org": "acme",
        "token": {"file": str(token_file)},
    }
    config = Config.from_mapping(data)
    job = config.jobs["keep"]
    assert isinstance(job, ArchiveJob)
    engine = FluxEngine("two", influxdb2_connection(standin.url, token_file))
    window = Window(T0, T0 + HOUR)
    try:
        resolved = await resolve_measurements(config, job, engine, window)
    finally:
        await engine.aclose()

    assert resolved.measurements == ("cpu", "cpu_2", 'weird, "name"')
    assert resolved.measurement_pattern == "/^c|name/"
    (sent,) = [r for r in standin.requests if r.path == "/api/v2/query"]
    script = sent.json()["query"]
    assert script == FLUX.render_measurements(config.tiers["hot2"], window, {"site": "s1"})
    assert flux_checker.is_valid(script), script
    calls = [node["callee"]["name"] for node in walk(flux_checker.ast(script)) if _call(node)]
    assert calls[:2] == ["from", "range"]
    assert {"keep", "group", "distinct", "filter"} <= set(calls)
    assert "range(start: 2026-11-01T00:00:00Z, stop: 2026-11-01T01:00:00Z)" in script
    assert {"hot", "site", "s1", "_measurement"} <= set(string_literals(flux_checker.ast(script)))
    # The plan of a 2.x pattern job shows the same listing.
    assert render_job(config, "keep", Batch((window,))).text == script


def _call(node: dict[str, Any]) -> bool:
    return node.get("type") == "CallExpression" and "name" in node.get("callee", {})


def test_both_dialects_list_within_the_window_and_the_tier_only() -> None:
    config = load(measurements="*")
    window = Window(T0, T0 + HOUR)
    check = check_query(config.tiers["warm"], window, {}, ["a", 'b "x"'])
    assert check == (
        'SELECT * FROM "db"."warm"."a", "db"."warm"."b \\"x\\"" WHERE '
        "time >= '2026-11-01T00:00:00Z' AND time < '2026-11-01T01:00:00Z' LIMIT 1"
    )
    flux = FLUX.render_measurements(config.tiers["hot2"], window, {})
    assert flux.startswith('from(bucket: "hot")\n  |> range(start: 2026-11-01T00:00:00Z, stop: ')
