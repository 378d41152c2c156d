"""The `recheck` fingerprint of a 1.x source: a query InfluxDB accepts for every field type
(1.6.7 refuses `sum` of booleans and strings), and a digest that does not move when nothing
changed. What the server answers is checked in tests/integration/test_recheck_types.py."""

from __future__ import annotations

import pytest

from tests.unit.test_templates import batch, hour, make_config
from tierflow._engines import Series
from tierflow._errors import TemplateError
from tierflow._jobs import fingerprints, render_fingerprint

AGGREGATES = {"temp": ["mean", "last"], "online": ["min", "max"], "state": ["first"]}
WINDOWS = batch((hour(5), hour(6)), (hour(6), hour(7)))


def test_each_type_gets_the_columns_it_accepts() -> None:
    config = make_config(aggregates=AGGREGATES, recheck="2h")
    types = {"cpu": {"temp": {"float"}, "online": {"boolean"}, "state": {"string", "integer"}}}
    totals, per_series = render_fingerprint(config, "j", WINDOWS, types).text.split("; ")
    assert totals.startswith(
        'SELECT count("temp"::float) AS "count(temp::float)", '
        'sum("temp"::float) AS "sum(temp::float)", last("temp"::float) AS "last(temp::float)", '
        'count("online"::boolean) AS "count(online::boolean)", '
        'count("state"::integer) AS "count(state::integer)", '
        'sum("state"::integer) AS "sum(state::integer)", '
        'first("state"::integer) AS "first(state::integer)", '
        'count("state"::string) AS "count(state::string)" FROM'
    )
    assert totals.endswith("GROUP BY time(1h)")
    assert per_series.startswith(
        'SELECT min("online"::boolean) AS "min(online::boolean)", '
        'max("online"::boolean) AS "max(online::boolean)", '
        'first("state"::string) AS "first(state::string)" FROM'
    )
    assert per_series.endswith("GROUP BY time(1h), *")


def test_a_field_without_data_has_no_column_and_no_data_no_query() -> None:
    config = make_config(aggregates=AGGREGATES, recheck="2h")
    only_temp = render_fingerprint(config, "j", WINDOWS, {"cpu": {"temp": {"float"}}}).text
    assert "online" not in only_temp
    assert "state" not in only_temp
    assert render_fingerprint(config, "j", WINDOWS, {}).text == ""


def test_without_types_every_type_is_rendered() -> None:
    text = render_fingerprint(make_config(aggregates=AGGREGATES, recheck="2h"), "j", WINDOWS).text
    for kind in ("float", "integer", "unsigned", "boolean", "string"):
        assert f'count("online"::{kind})' in text


def test_an_unknown_type_is_refused_by_name() -> None:
    config = make_config(aggregates=AGGREGATES, recheck="2h")
    with pytest.raises(TemplateError, match=r"job j: measurement 'cpu' field 'temp' .*'decimal'"):
        render_fingerprint(config, "j", WINDOWS, {"cpu": {"temp": {"decimal"}}})


def test_an_empty_bucket_reads_the_same_however_it_is_answered() -> None:
    late, early = hour(6), hour(5)
    ns = [int(moment.timestamp()) * 10**9 for moment in (early, late)]
    columns = ["time", "count(x::float)", "sum(x::float)", "count(b::boolean)"]
    filled = Series("m", {}, columns, [[ns[0], 3, 1.5, 0], [ns[1], 0, None, 0]])
    alone = Series("m", {}, columns, [[ns[0], 3, 1.5, 0]])
    other = Series("m", {}, [*columns, "count(x::string)"], [[ns[0], 3, 1.5, 0, 0]])
    digests = [fingerprints(found, WINDOWS) for found in ([filled], [alone], [other])]
    assert digests[0] == digests[1] == digests[2]
    assert digests[0][late] == fingerprints([], WINDOWS)[late]


def test_a_false_is_a_value_and_tags_tell_series_apart() -> None:
    start = int(hour(5).timestamp()) * 10**9
    columns = ["time", "min(b::boolean)"]
    seen = {
        name: fingerprints([Series("m", tags, columns, [[start, value]])], WINDOWS)[hour(5)]
        for name, tags, value in [
            ("false", {"host": "a"}, False),
            ("true", {"host": "a"}, True),
            ("none", {"host": "a"}, None),
            ("other host", {"host": "b"}, False),
        ]
    }
    assert len(set(seen.values())) == 4
