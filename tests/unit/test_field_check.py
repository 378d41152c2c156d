"""The source's field types on 2.x (a Flux script the official checker accepts, read through a
stand-in server), and the per-dialect rules of which aggregate takes which type. The 1.x rules
and lookups are checked against the real influxd in tests/integration/test_field_checks.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tests.influx2_standin import TOKEN, Point, StandIn, influxdb2_connection, unpivoted_csv
from tierflow._archive import FieldType
from tierflow._config import DownsampleJob, TierConfig
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.flux._reads import field_types_script
from tierflow._field_check import source_field_types, type_problems

__all__ = ["flux_checker"]

NOW = datetime(2026, 11, 1, tzinfo=UTC)
NS = 1_000_000_000
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bucket=names, measurement=names)
def test_the_field_types_script_type_checks_and_holds_exactly_its_inputs(
    flux_checker: FluxChecker, bucket: str, measurement: str
) -> None:
    script = field_types_script(bucket=bucket, measurement=measurement, stop=NOW)

    assert flux_checker.is_valid(script), script
    tree = flux_checker.ast(script)
    assert string_literals(tree) == [bucket, measurement, "_start", "_stop", "_measurement"]
    calls = [
        node["callee"]["name"]
        for node in walk(tree)
        if node["type"] == "CallExpression" and node.get("callee", {}).get("type") == "Identifier"
    ]
    assert calls == ["from", "range", "filter", "first", "drop"]


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn(tokens={TOKEN}, buckets={"hot"})
    await server.start()
    yield server
    await server.stop()


async def test_2x_field_types_come_from_each_tables_datatype(
    standin: StandIn, token_file: Path
) -> None:
    # `n` is an integer in one shard and a float in another: two tables, both types kept.
    points: list[Point] = [
        (1 * NS, (("host", "a"),), (("n", 3), ("temp", 0.5), ("state", "on"))),
        (2 * NS, (("host", "b"),), (("n", 4.25), ("ok", True))),
    ]
    standin.default_csv = unpivoted_csv(points)
    engine = FluxEngine("cloud", influxdb2_connection(standin.url, token_file))
    try:
        tier = TierConfig(connection="cloud", bucket="hot")
        types = await source_field_types(engine, tier, "cpu", now=NOW)
    finally:
        await engine.aclose()

    assert types == {
        "n": {FieldType.INTEGER, FieldType.FLOAT},
        "temp": {FieldType.FLOAT},
        "state": {FieldType.STRING},
        "ok": {FieldType.BOOLEAN},
    }
    (sent,) = [r for r in standin.requests if r.path == "/api/v2/query"]
    assert sent.json()["query"] == field_types_script(bucket="hot", measurement="cpu", stop=NOW)


def job(aggregates: dict[str, Any]) -> DownsampleJob:
    return DownsampleJob.model_validate(
        {
            "kind": "downsample",
            "source": "hot",
            "dest": "warm",
            "measurements": ["cpu"],
            "every": "5m",
            "start": NOW - timedelta(days=1),
            "aggregates": aggregates,
        }
    )


TYPES = {
    "ok": frozenset({FieldType.BOOLEAN}),
    "state": frozenset({FieldType.STRING}),
    "n": frozenset({FieldType.INTEGER, FieldType.FLOAT}),
}


def test_influxql_takes_min_and_max_of_booleans_and_flux_does_not() -> None:
    spec = job({"ok": ["max", "min", "count"], "n": ["max"]})

    assert type_problems(spec, "influxql", "cpu", TYPES) == []
    assert type_problems(spec, "flux", "cpu", TYPES) == [
        "measurement 'cpu' field 'ok' is boolean in the source: aggregate max does not apply "
        "to boolean fields (flux max takes float, integer, unsigned)",
        "measurement 'cpu' field 'ok' is boolean in the source: aggregate min does not apply "
        "to boolean fields (flux min takes float, integer, unsigned)",
    ]


def test_every_problem_names_measurement_field_and_aggregate() -> None:
    spec = job({"state": ["mean", "first"], "n": ["sum"], "gone": ["mean", "max"]})

    assert type_problems(spec, "influxql", "cpu", TYPES) == [
        "measurement 'cpu' has no field 'gone' in the source (its fields: n, ok, state); "
        "aggregates mean, max would write nothing",
        "measurement 'cpu' field 'state' is string in the source: aggregate mean does not apply "
        "to string fields (influxql mean takes float, integer, unsigned)",
    ]
    assert type_problems(spec, "influxql", "cpu", {})[0] == (
        "measurement 'cpu' has no field 'gone' in the source (its fields: none: no data, or a "
        "misspelt measurement); aggregates mean, max would write nothing"
    )
