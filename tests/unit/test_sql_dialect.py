"""The SQL dialect's static side: quoting filters checked against DataFusion itself (the engine
InfluxDB 3 runs), the sqlglot safety checker's refusals, and `tierflow validate` refusing an
unsafe `.sql.j2` template with exit 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from datafusion import SessionContext
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tierflow._cli import app
from tierflow._engines import dialect_for, dialect_named
from tierflow._engines.sql._checks import sql_problems
from tierflow._engines.sql._downsample import split_statements
from tierflow._engines.sql._literals import sql_ident, sql_interval, sql_literal, sql_time
from tierflow._errors import TemplateError
from tierflow._query_checks import Target
from tierflow._windows import Window

WINDOW = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))
DEST = Target("warm", None, "warm", None)
BOUNDS = (
    "\"time\" >= TIMESTAMP '2026-01-01T00:00:00Z' AND \"time\" < TIMESTAMP '2026-01-01T01:00:00Z'"
)
GOOD = f'INSERT INTO "warm"."cpu_1h" SELECT avg("x") AS "x" FROM "hot"."cpu" WHERE {BOUNDS}'


def datafusion_row(sql: str) -> dict[str, object]:
    table = SessionContext().sql(sql).to_arrow_table()
    (row,) = table.to_pylist()
    return dict(row)


# -- quoting, against DataFusion ----------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]))


@settings(max_examples=60, deadline=None)
@given(name=_TEXT.filter(bool), value=_TEXT)
def test_names_and_strings_reach_datafusion_exactly(name: str, value: str) -> None:
    row = datafusion_row(f"SELECT {sql_literal(value)} AS {sql_ident(name)}")
    assert row == {name: value}


def test_numbers_booleans_times_and_intervals_reach_datafusion_exactly() -> None:
    row = datafusion_row(
        f"SELECT {sql_literal(-(2**63))} AS i, {sql_literal(0.1)} AS f, {sql_literal(True)} AS b,"
        f" {sql_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))} AS t,"
        f" {sql_time(datetime(2026, 1, 1, tzinfo=UTC))} + {sql_interval(timedelta(minutes=5))}"
        " AS s"
    )
    assert row["i"] == -(2**63)
    assert row["f"] == 0.1
    assert row["b"] is True
    assert row["t"] == datetime(2026, 1, 2, 3, 4, 5, 6)  # noqa: DTZ001 - Timestamp(ns), no zone
    assert row["s"] == datetime(2026, 1, 1, 0, 5)  # noqa: DTZ001


def test_names_are_case_kept_where_an_unquoted_name_is_folded() -> None:
    context = SessionContext()
    context.register_record_batches("t", [[pa.record_batch({"Host": ["a"], "host": ["b"]})]])
    assert context.sql(f"SELECT {sql_ident('Host')} FROM t").to_pydict() == {"Host": ["a"]}
    assert context.sql("SELECT Host FROM t").to_pydict() == {"host": ["b"]}  # folded


@pytest.mark.parametrize(
    ("value", "message"),
    [("a\x00b", "NUL"), ("", "empty"), (None, "NoneType"), ([1], "list")],
)
def test_what_cannot_be_said_is_refused(value: object, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        sql_ident(value)


def test_literal_refusals() -> None:
    with pytest.raises(TemplateError, match="finite"):
        sql_literal(float("nan"))
    with pytest.raises(TemplateError, match="datetime"):
        sql_time("2026-01-01")
    with pytest.raises(TemplateError, match="negative"):
        sql_interval(timedelta(seconds=-1))


# -- the checker -------------------------------------------------------------------------------


def problems(text: str, *, require_write: bool = True) -> list[str]:
    return list(sql_problems(text, WINDOW, DEST, require_write))


def test_a_bounded_quoted_insert_select_passes() -> None:
    assert problems(GOOD) == []
    assert problems(GOOD.replace("TIMESTAMP '", "'")) == []  # plain string bounds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'INSERT INTO "warm"."t" SELECT avg("x") AS "x" FROM "hot"."cpu"',
            'the WHERE must bound "time" >= the window\'s start 2026-01-01T00:00:00Z',
        ),
        (
            GOOD.replace("'2026-01-01T01:00:00Z'", "'2026-01-01T02:00:00Z'"),
            "is not the window's stop: write < TIMESTAMP '2026-01-01T01:00:00Z'",
        ),
        (
            GOOD.replace(' AND "time" <', ' OR "time" <'),
            "at its top level (no OR beside it)",
        ),
        (
            GOOD.replace("TIMESTAMP '2026-01-01T00:00:00Z'", "now() - INTERVAL '1 hour'"),
            "is not the window's start",
        ),
        (GOOD.replace('avg("x")', "avg(x)"), 'the name x is not quoted: write "x"'),
        (GOOD.replace('"hot"."cpu"', "hot.cpu"), "the name cpu is not quoted"),
        (GOOD.replace('"hot"."cpu"', '"cpu"'), 'the table "cpu" must name its database'),
        (
            GOOD.replace('FROM "hot"."cpu"', 'FROM "hot"."cpu" JOIN "cold"."x" ON TRUE'),
            "reads tables of several databases",
        ),
        ('DROP TABLE "cpu"', "DROP is not allowed"),
        (f'DELETE FROM "cpu" WHERE {BOUNDS}', "DELETE is not allowed"),
        ('CREATE TABLE "x" ("a" INT)', "CREATE is not allowed"),
        (f'UPDATE "cpu" SET "x" = 1 WHERE {BOUNDS}', "UPDATE is not allowed"),
        (GOOD.replace('INTO "warm"', 'INTO "hot"'), "not the job's dest database 'warm'"),
        (GOOD.replace('INTO "warm"."cpu_1h"', 'INTO "cpu_1h"'), "must name the dest database"),
        (
            f'INSERT INTO "warm"."t" SELECT * FROM "hot"."cpu" WHERE {BOUNDS}',
            "neither aggregation",
        ),
        (f'SELECT avg("x") FROM "hot"."cpu" WHERE {BOUNDS}', "a query job must write"),
        ("SELECT avg(", "the SQL does not parse"),
        ("", "no statement"),
        (
            'INSERT INTO "warm"."t" SELECT avg("x") AS "x" FROM (SELECT "x" FROM "hot"."cpu") '
            f'AS "s" WHERE {BOUNDS}',
            "the WHERE must bound",
        ),
    ],
)
def test_unsafe_sql_is_refused_with_the_reason(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_a_relay_read_need_not_write() -> None:
    text = GOOD.removeprefix('INSERT INTO "warm"."cpu_1h" ')
    assert problems(text, require_write=False) == []


# -- what the engine sends ------------------------------------------------------------------------


def test_statements_are_cut_at_token_positions() -> None:
    """The INSERT clause and the databases' names are cut out by the tokenizer's positions: a
    quoted name or a string holding `"hot".` or `;` stays as it is."""
    text = (
        'INSERT INTO "warm"."a;b" SELECT count("x") AS "n" FROM "hot"."we""ird" '
        f'WHERE {BOUNDS} AND "tag" = \'"hot".;\' GROUP BY "tag";\n{GOOD}'
    )
    first, second = split_statements(text, every_tag=False)
    assert (first.dest_database, first.dest_table) == ("warm", "a;b")
    assert (first.source_database, first.source_table) == ("hot", 'we"ird')
    assert first.select == (
        f'SELECT count("x") AS "n" FROM "we""ird" WHERE {BOUNDS} AND "tag" = \'"hot".;\' '
        'GROUP BY "tag"'
    )
    assert second.select == f'SELECT avg("x") AS "x" FROM "cpu" WHERE {BOUNDS}'


def test_tag_columns_go_into_the_select_and_the_group_by() -> None:
    (statement,) = split_statements(
        f'INSERT INTO "warm"."t" SELECT avg("x") AS "x" FROM "hot"."cpu" WHERE {BOUNDS} '
        "GROUP BY date_bin(INTERVAL '1 hour', \"time\")",
        every_tag=True,
    )
    sent = statement.with_tags(["host", 'a"b'])
    assert sent.startswith('SELECT "host", "a""b", avg("x")')
    assert sent.endswith('GROUP BY date_bin(INTERVAL \'1 hour\', "time"), "host", "a""b"')


def test_tables_of_two_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="same source database"):
        split_statements(
            f'SELECT count(*) FROM "hot"."a" JOIN "cold"."b" ON TRUE WHERE {BOUNDS}',
            every_tag=False,
        )


# -- tierflow validate ---------------------------------------------------------------------------


def write_config(tmp_path: Path, template: str, *, aggregates: str = "") -> Path:
    (tmp_path / "rollup.sql.j2").write_text(template, encoding="utf-8")
    path = tmp_path / "tierflow.toml"
    job = (
        '[jobs.rollup]\nkind = "query"\ntemplate = "rollup.sql.j2"\nparams = { t = "cpu" }\n'
        if not aggregates
        else f'[jobs.rollup]\nkind = "downsample"\nmeasurements = ["cpu"]\n'
        f'into = "{{{{ measurement }}}}_1h"\naggregates = {{ x = [{aggregates}] }}\n'
    )
    path.write_text(
        '[connections.v3]\nkind = "influxdb3"\nurl = "http://localhost:8181"\n'
        'token = { env = "V3_TOKEN" }\n'
        '[tiers.hot]\nconnection = "v3"\nbucket = "hot"\n'
        '[tiers.warm]\nconnection = "v3"\nbucket = "warm"\n'
        f'{job}source = "hot"\ndest = "warm"\nevery = "1h"\nstart = "2026-01-01T00:00:00Z"\n',
        encoding="utf-8",
    )
    return path


SAFE_TEMPLATE = (
    'INSERT INTO {{ dest.database | sql_ident }}."cpu_1h"\n'
    'SELECT date_bin(INTERVAL \'1 hour\', "time") AS "time", avg("x") AS "x"\n'
    'FROM {{ source.database | sql_ident }}."cpu"\n'
    'WHERE "time" >= {{ window.start | sql_time }} AND "time" < {{ window.stop | sql_time }}\n'
    "GROUP BY date_bin(INTERVAL '1 hour', \"time\")\n"
)


def test_validate_accepts_a_safe_sql_template(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "-c", str(write_config(tmp_path, SAFE_TEMPLATE))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (SAFE_TEMPLATE.replace('AND "time" < {{ window.stop | sql_time }}', ""), "must bound"),
        (SAFE_TEMPLATE.replace('avg("x")', "avg(x)"), "is not quoted"),
        (
            SAFE_TEMPLATE.replace('{{ source.database | sql_ident }}."cpu"', "{{ params.t }}"),
            "without a quoting filter",
        ),
    ],
)
def test_validate_refuses_unbounded_or_misquoted_sql_with_exit_2(
    tmp_path: Path, template: str, expected: str
) -> None:
    result = CliRunner().invoke(app, ["validate", "-c", str(write_config(tmp_path, template))])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_validate_refuses_stddev_and_mode_with_the_reason(tmp_path: Path) -> None:
    path = write_config(tmp_path, "", aggregates='"stddev", "mode"')
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "Welford" in result.output
    assert "SQL has no mode() aggregate" in result.output


def test_the_dialect_refuses_replace_on_3x() -> None:
    capabilities = dialect_for("influxdb3").capabilities
    assert not capabilities.delete_window
    assert "cannot delete a time range" in capabilities.why_not["delete_window"]


# -- listing the measurements of a window (`measurements = "*"`) --------------------------------


def test_the_listing_check_is_safe_sql_that_datafusion_answers_per_table() -> None:
    """Each table is one parenthesised, limited part of a UNION ALL: it passes the checker,
    the engine sends it whole (its leading parenthesis kept, the database's name cut), and
    DataFusion answers one row for each table with a point in the window (the tag filter
    applied), none for the others."""
    from tierflow._config import TierConfig
    from tierflow._engines.sql._listing import check_query

    tier = TierConfig(connection="v3", bucket="hot")
    names = ["in", "we\"ird'name, x", "before", "at_stop", "other_site"]
    text = check_query(tier, WINDOW, {"site": "a"}, names)
    assert problems(text, require_write=False) == []
    (statement,) = split_statements(text, every_tag=False)
    assert statement.source_database == "hot"
    assert statement.select.startswith('(SELECT \'in\' AS "measurement" FROM "in" WHERE')
    assert statement.select.endswith("LIMIT 1)")
    assert '"hot".' not in statement.select

    start = int(WINDOW.start.timestamp()) * 1_000_000_000
    stop = int(WINDOW.stop.timestamp()) * 1_000_000_000
    times = {
        "in": (stop - 1, "a"),
        "we\"ird'name, x": (start, "a"),
        "before": (start - 1, "a"),
        "at_stop": (stop, "a"),
        "other_site": (start + 1, "b"),
    }
    context = SessionContext()
    for name, (time, site) in times.items():
        data = pa.table(
            {
                "site": pa.array([site]).dictionary_encode(),
                "time": pa.array([time], pa.timestamp("ns")),
                "v": [1.0],
            }
        )
        context.register_record_batches('"' + name.replace('"', '""') + '"', [data.to_batches()])
    found = context.sql(statement.select).to_arrow_table().column("measurement").to_pylist()
    assert sorted(found) == sorted(["in", "we\"ird'name, x"])


def test_a_union_with_a_part_neither_limited_nor_aggregated_is_refused() -> None:
    limited = f'(SELECT "x" FROM "hot"."a" WHERE {BOUNDS} LIMIT 1)'
    raw = f'(SELECT "x" FROM "hot"."b" WHERE {BOUNDS})'
    assert problems(f"{limited} UNION ALL {limited}", require_write=False) == []
    found = problems(f"{limited} UNION ALL {raw}", require_write=False)
    assert any("neither aggregation" in p for p in found), found


def test_a_table_alias_that_renames_time_is_refused() -> None:
    """`FROM "hot"."cpu" AS "c"("t0", "v", "time")` renames the table's columns in order: the
    WHERE's `"time"` is then another column, and the bound does not bound the read. DataFusion
    itself shows it: of three points, one in the window, the renamed query counts all three."""
    ctx = SessionContext()
    inside = (datetime(2026, 1, 1, 0, 30, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // (
        timedelta(microseconds=1)
    )
    times = pa.array([0, inside * 1000, 2 * 10**18], pa.timestamp("ns"))
    other = pa.array([inside * 1000] * 3, pa.timestamp("ns"))
    batch = pa.record_batch({"time": times, "v": [1.0, 2.0, 3.0], "t2": other})
    ctx.register_record_batches("cpu", [[batch]])
    renamed = '"cpu" AS "c"("t0", "v", "time")'
    for source, n in (('"cpu"', 1), (renamed, 3)):
        read = f'SELECT count("v") AS "n" FROM {source} WHERE {BOUNDS}'
        assert ctx.sql(read).to_pylist() == [{"n": n}]
    text = f'INSERT INTO "warm"."t" SELECT count("v") AS "n" FROM "hot".{renamed} WHERE {BOUNDS}'
    found = problems(text)
    assert any("renames its columns" in p for p in found), found
    joined = GOOD.replace('FROM "hot"."cpu"', 'FROM "hot"."m" JOIN "hot".' + renamed + " ON TRUE")
    assert any("renames its columns" in p for p in problems(joined))


@pytest.mark.parametrize(
    "over",
    [
        'count(*) OVER () AS "n"',
        'sum("v") OVER (PARTITION BY "host") AS "n"',
        'first_value("v") OVER (ORDER BY "time") AS "n"',
        f'(SELECT count(*) FROM "hot"."cpu" WHERE {BOUNDS}) AS "n"',
    ],
)
def test_an_aggregate_over_a_window_is_not_aggregation(over: str) -> None:
    """`count(*) OVER ()` is an aggregate function, but as a window function it answers one
    row per point, as does a SELECT whose only aggregate is a subquery's: DataFusion shows it
    (three points, three rows back). Such a SELECT is a raw copy of the window streamed
    through tierflow, and is refused as one."""
    ctx = SessionContext()
    times = pa.array([1, 2, 3], pa.timestamp("ns"))
    ctx.register_record_batches(
        "cpu", [[pa.record_batch({"time": times, "v": [1.0, 2.0, 3.0], "host": ["a"] * 3})]]
    )
    read = f'SELECT "time", "v", {over} FROM "cpu"'.replace('"hot".', "")
    assert ctx.sql(read).to_arrow_table().num_rows == 3
    text = f'INSERT INTO "warm"."t" SELECT "time", "v", {over} FROM "hot"."cpu" WHERE {BOUNDS}'
    found = problems(text)
    assert any("neither aggregation" in p for p in found), found
    grouped = text.replace(f"{BOUNDS}", f'{BOUNDS} GROUP BY "time", "v", "host"')
    assert not any("neither aggregation" in p for p in problems(grouped))


def test_an_insert_column_list_is_refused_for_it_would_not_be_applied() -> None:
    """3.x has no INSERT: the engine sends the SELECT and writes its columns by their own
    names, so `INSERT INTO "warm"."t" ("mean_x") SELECT avg("x") …` would write a field named
    as DataFusion names `avg("x")`, not `mean_x`: what is sent has no column list."""
    text = GOOD.replace('"cpu_1h" SELECT avg("x") AS "x"', '"cpu_1h" ("mean_x") SELECT avg("x")')
    (statement,) = split_statements(text, every_tag=False)
    assert "mean_x" not in statement.select
    found = problems(text)
    assert any("column list" in p for p in found), found


def test_plan_shows_the_listing_of_a_3x_tier() -> None:
    from tierflow._config import TierConfig

    tier = TierConfig(connection="v3", bucket="hot")
    text = dialect_named("sql").render_measurements(tier, WINDOW, {"site": "a"})
    assert text.startswith("-- database hot\nSELECT table_name FROM information_schema.tables")
    assert "column_name IN ('site')" in text
    part = f'(SELECT \'…\' AS "measurement" FROM "hot"."…" WHERE {BOUNDS} AND "site" = \'a\''
    assert part in text
