"""The dispatch rules (`check_query`): what may be sent for a window, in Flux and in InfluxQL.
Each refused case is the accepted query with one thing changed, so the refusal is about it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tierflow._query_checks import Target, UnsafeQueryError, check_query
from tierflow._templates import RenderedQuery
from tierflow._windows import Window

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
WINDOW = Window(START, START + timedelta(hours=1))
T0, T1 = "2026-11-01T00:00:00Z", "2026-11-01T01:00:00Z"
DEST = Target(bucket="warm", org="acme", database="plant", retention_policy="warm")
DEST_DEFAULT_RP = Target(bucket="plant", org=None, database="plant", retention_policy=None)


def flux(text: str, *, require_write: bool = True) -> None:
    check_query(
        RenderedQuery(text, "t.flux.j2", "v", "flux"),
        window=WINDOW,
        dest=DEST,
        require_write=require_write,
    )


def influxql(text: str, *, dest: Target = DEST, require_write: bool = True) -> None:
    check_query(
        RenderedQuery(text, "t.influxql.j2", "v", "influxql"),
        window=WINDOW,
        dest=dest,
        require_write=require_write,
    )


GOOD_FLUX = f"""
import "strings"
// a comment: to(bucket: "elsewhere") is not a call
data = from(bucket: "hot")
  |> range(start: {T0}, stop: {T1})
  |> filter(fn: (r) => r._measurement == "kwh" and strings.hasPrefix(v: r.site, prefix: "b"))
data
  |> aggregateWindow(every: 1h, fn: sum, createEmpty: false, timeSrc: "_start")
  |> to(bucket: "warm", org: "acme")
"""


def test_a_good_flux_query_passes() -> None:
    flux(GOOD_FLUX)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ((f"start: {T0}", "start: -1h"), "range(start: -1h) is not an absolute time"),
        ((f"start: {T0}", "start: now()"), "is not an absolute time"),
        ((f", stop: {T1}", ""), "range() has no stop"),
        ((T1, "2026-11-01T02:00:00Z"), "is not the window's stop"),
        ((T0, "2026-10-31T23:00:00Z"), "is not the window's start"),
        (('bucket: "warm"', 'bucket: "cold"'), "writes to bucket 'cold'"),
        (('org: "acme"', 'org: "evil"'), "org must be the dest tier's org"),
        (('bucket: "warm", org', 'bucketID: "0a", org'), "sets bucketID"),
        (('bucket: "warm"', 'bucket: "warm", host: "http://x"'), "sets host"),
        (
            (
                'aggregateWindow(every: 1h, fn: sum, createEmpty: false, timeSrc: "_start")',
                "map(fn: (r) => r)",
            ),
            "neither aggregation nor limit()",
        ),
        (
            (
                "data\n  |> aggregateWindow",
                'import "http"\nhttp.post(url: "x")\ndata\n  |> aggregateWindow',
            ),
            "http.post() sends data outside the dest tier",
        ),
    ],
)
def test_a_flux_query_is_refused_for_one_change(change: tuple[str, str], problem: str) -> None:
    old, new = change
    assert old in GOOD_FLUX
    with pytest.raises(UnsafeQueryError, match=r"template t\.flux\.j2: ") as caught:
        flux(GOOD_FLUX.replace(old, new))
    assert problem in str(caught.value)


def test_a_flux_query_job_must_write_and_a_read_must_be_reduced() -> None:
    read = f'from(bucket: "hot") |> range(start: {T0}, stop: {T1}) |> limit(n: 10)'
    flux(read, require_write=False)
    with pytest.raises(UnsafeQueryError, match="no to\\(\\)"):
        flux(read)
    with pytest.raises(UnsafeQueryError, match="neither aggregation nor limit"):
        flux(f'from(bucket: "hot") |> range(start: {T0}, stop: {T1})', require_write=False)
    with pytest.raises(UnsafeQueryError, match="no range"):
        flux('from(bucket: "hot") |> limit(n: 1)', require_write=False)


def test_every_range_of_a_script_is_checked() -> None:
    second = f'\nfrom(bucket: "hot") |> range(start: {T0}) |> count() |> yield(name: "b")'
    with pytest.raises(UnsafeQueryError, match="range\\(\\) has no stop"):
        flux(GOOD_FLUX + second)


GOOD_QL = (
    'SELECT mean("temp") AS "temp_mean" INTO "plant"."warm"."sensor" '
    'FROM "plant"."autogen"."sensor" '
    f"WHERE time >= '{T0}' AND time < '{T1}' AND \"site\" = 'a' GROUP BY time(5m), *"
)


def test_a_good_influxql_query_passes() -> None:
    influxql(GOOD_QL)
    influxql(GOOD_QL + "; " + GOOD_QL.replace("sensor", "other"))
    # `:MEASUREMENT` keeps the source name; two parts mean the query's database.
    influxql(GOOD_QL.replace('"plant"."warm"."sensor"', '"warm".:MEASUREMENT'))
    default_rp = GOOD_QL.replace('"plant"."warm"."sensor"', '"plant".."sensor"')
    influxql(default_rp, dest=DEST_DEFAULT_RP)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ((f"time >= '{T0}'", "time >= now() - 1h"), "time may only appear as"),
        ((f"time >= '{T0}' AND ", ""), "WHERE lacks time >="),
        ((f"'{T1}'", "'2026-11-01T02:00:00Z'"), "time < is not the window's bound"),
        ((f"AND time < '{T1}'", f"OR time < '{T1}'"), "OR at the top of WHERE"),
        ((" AND \"site\" = 'a'", " OR \"site\" = 'a'"), "OR at the top of WHERE"),
        ((f"time >= '{T0}'", f"(time >= '{T0}' OR true)"), "time may only appear as"),
        (('"plant"."warm"."sensor"', '"other"."warm"."sensor"'), "is not the job's dest tier"),
        (('"plant"."warm"."sensor"', '"plant"."autogen"."sensor"'), "is not the job's dest tier"),
        (('"plant"."warm"."sensor"', '"sensor"'), "is not the job's dest tier"),
        (("SELECT", "DELETE"), "only SELECT statements"),
        (('FROM "plant"', 'FROM (SELECT * FROM "x") , "plant"'), "subqueries"),
    ],
)
def test_an_influxql_query_is_refused_for_one_change(change: tuple[str, str], problem: str) -> None:
    old, new = change
    assert old in GOOD_QL
    with pytest.raises(UnsafeQueryError, match=r"template t\.influxql\.j2: ") as caught:
        influxql(GOOD_QL.replace(old, new, 1))
    assert problem in str(caught.value)


def test_influxql_without_into_must_be_reduced_and_a_query_job_must_write() -> None:
    read = f"SELECT \"temp\" FROM \"sensor\" WHERE time >= '{T0}' AND time < '{T1}'"
    with pytest.raises(UnsafeQueryError, match="neither an aggregate nor LIMIT"):
        influxql(read, require_write=False)
    influxql(read + " LIMIT 10", require_write=False)
    influxql(read.replace('"temp"', 'max("temp")'), require_write=False)
    with pytest.raises(UnsafeQueryError, match="must write"):
        influxql(read + " LIMIT 10")


def test_a_statement_hidden_after_a_comment_or_inside_a_string_is_seen_or_ignored_rightly() -> None:
    # The `;` inside a string does not split; the DROP after a real `;` is its own statement.
    influxql(GOOD_QL.replace("'a'", "'a; DROP DATABASE plant'"))
    with pytest.raises(UnsafeQueryError, match="only SELECT"):
        influxql(GOOD_QL + '; DROP DATABASE "plant"')
    influxql(GOOD_QL + " -- ; DROP DATABASE plant")
