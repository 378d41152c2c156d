"""The 3.x engine's request contract, its admin (`tierflow apply`) and `validate --online`,
against the DataFusion-backed 3.x stand-in (`tests/influx3_standin.py`): paths, databases,
formats, the bearer token and its re-fetch on a 401, the statuses 3.x answers. The stand-in is
proven against the documented API only (see its docstring); the SQL it runs is DataFusion's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.influx3_standin import (
    ROTATED,
    TOKEN,
    Influx3StandIn,
    Recorded,
    ThreadedInflux3StandIn,
)
from tierflow._cli import app
from tierflow._config import InfluxDB3Connection
from tierflow._engines.sql._engine import InfluxDB3Engine
from tierflow._errors import AuthError, QueryError, TransientEngineError
from tierflow._templates import RenderedQuery


def connection(server: Influx3StandIn, token_file: Path, **more: object) -> InfluxDB3Connection:
    token_file.write_text(TOKEN, encoding="utf-8")
    return InfluxDB3Connection.model_validate(
        {
            "kind": "influxdb3",
            "url": server.url,
            "token": {"file": str(token_file)},
            "retry": {"attempts": 1},
            **more,
        }
    )


async def test_query_reads_json_with_times_in_nanoseconds(
    influx3: Influx3StandIn, tmp_path: Path
) -> None:
    influx3.write("hot", 'cpu,host=a x=1.5,s="t" 1000000001\ncpu,host=b y=2i 2000000000')
    engine = InfluxDB3Engine("v3", connection(influx3, tmp_path / "token"))
    try:
        (series,) = await engine.query(
            'SELECT "time", "host", "x", "y" FROM "cpu" ORDER BY "time"', database="hot"
        )
    finally:
        await engine.aclose()
    assert series.columns == ["time", "host", "x", "y"]
    assert series.values == [[1000000001, "a", 1.5, None], [2000000000, "b", None, 2]]
    (request,) = influx3.requests
    assert (request.method, request.path) == ("POST", "/api/v3/query_sql")
    assert request.json() == {
        "db": "hot",
        "q": 'SELECT "time", "host", "x", "y" FROM "cpu" ORDER BY "time"',
        "format": "json",
    }
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_a_qualified_table_is_read_in_its_database(
    influx3: Influx3StandIn, tmp_path: Path
) -> None:
    influx3.write("hot", "cpu x=1 1")
    engine = InfluxDB3Engine("v3", connection(influx3, tmp_path / "token", database="other"))
    try:
        (series,) = await engine.query('SELECT count(*) AS "n" FROM "hot"."cpu"')
    finally:
        await engine.aclose()
    assert series.values == [[1]]
    assert influx3.requests[-1].json()["db"] == "hot"
    assert influx3.requests[-1].json()["q"] == 'SELECT count(*) AS "n" FROM "cpu"'


async def test_a_rotated_token_is_fetched_again_on_401_and_the_request_retried(
    influx3: Influx3StandIn, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    engine = InfluxDB3Engine("v3", connection(influx3, token_file))
    try:
        await engine.write(b"cpu x=1 1", database="hot")
        influx3.rotate_token(ROTATED)
        token_file.write_text(ROTATED, encoding="utf-8")
        await engine.write(b"cpu x=2 2", database="hot")
        influx3.rotate_token("apiv3_someone-else")
        with pytest.raises(AuthError) as caught:
            await engine.write(b"cpu x=3 3", database="hot")
    finally:
        await engine.aclose()
    assert ROTATED not in str(caught.value)
    assert [r.status for r in influx3.requests] == [204, 401, 204, 401, 401]
    assert [r.headers["Authorization"] for r in influx3.requests[1:3]] == [
        f"Bearer {TOKEN}",
        f"Bearer {ROTATED}",
    ]
    assert influx3.sql("hot", 'SELECT count(*) AS "n" FROM "cpu"').to_pylist() == [{"n": 2}]


async def test_write_refuses_the_whole_body_and_says_why(
    influx3: Influx3StandIn, tmp_path: Path
) -> None:
    engine = InfluxDB3Engine("v3", connection(influx3, tmp_path / "token"))
    try:
        await engine.write(b"cpu x=1 1", database="hot")
        with pytest.raises(QueryError) as caught:
            await engine.write(b"cpu x=2 2\ncpu x=3i 3", database="hot")
    finally:
        await engine.aclose()
    assert caught.value.status == 400
    write = influx3.requests[-1]
    assert write.query == {"db": "hot", "precision": "nanosecond", "accept_partial": "false"}
    # Nothing half-landed: the good line before the refused one was not written either.
    assert influx3.sql("hot", 'SELECT "x" FROM "cpu"').to_pylist() == [{"x": 1.0}]


async def test_errors_are_classified(influx3: Influx3StandIn, tmp_path: Path) -> None:
    engine = InfluxDB3Engine("v3", connection(influx3, tmp_path / "token"))
    try:
        with pytest.raises(QueryError, match="tierflow apply"):
            await engine.query('SELECT 1 AS "x"', database="nowhere")
        influx3.fail_next(503, retry_after=7)
        with pytest.raises(TransientEngineError) as caught:
            await engine.query('SELECT 1 AS "x"', database="hot")
        assert caught.value.retry_after == 7
        influx3.fail_next(503)
        with pytest.raises(TransientEngineError):
            await engine.ping()
        await engine.ping()
    finally:
        await engine.aclose()
    assert influx3.paths()[-1] == "/health"


async def test_execute_refuses_a_statement_that_does_not_write(
    influx3: Influx3StandIn, tmp_path: Path
) -> None:
    engine = InfluxDB3Engine("v3", connection(influx3, tmp_path / "token"))
    try:
        with pytest.raises(QueryError, match="no INSERT INTO"):
            await engine.execute(
                RenderedQuery('SELECT count(*) FROM "hot"."cpu"', "t.sql.j2", "v", "sql")
            )
    finally:
        await engine.aclose()
    assert influx3.requests == []  # refused before anything was sent


# -- tierflow apply and validate --online, through the CLI ------------------------------------


def write_config(tmp_path: Path, server: ThreadedInflux3StandIn, *, retention: str = "") -> Path:
    (tmp_path / "token").write_text(TOKEN, encoding="utf-8")
    path = tmp_path / "tierflow.toml"
    keep = f'retention = "{retention}"\n' if retention else ""
    path.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path}/state.db"\n'
        f'[connections.v3]\nkind = "influxdb3"\nurl = "{server.url}"\n'
        f'token = {{ file = "{tmp_path}/token" }}\n'
        f'[tiers.hot]\nconnection = "v3"\nbucket = "hot"\n{keep}'
        '[tiers.warm]\nconnection = "v3"\nbucket = "warm"\n'
        '[jobs.cpu_5m]\nkind = "downsample"\nsource = "hot"\ndest = "warm"\nevery = "5m"\n'
        'start = "2026-01-01T00:00:00Z"\nmeasurements = ["cpu"]\n'
        'into = "{{ measurement }}_5m"\naggregates = { usage = ["mean", "max"] }\n',
        encoding="utf-8",
    )
    return path


def test_apply_creates_databases_with_their_retention_and_never_pretends_to_change_one(
    tmp_path: Path, influx3_threaded: ThreadedInflux3StandIn
) -> None:
    path = write_config(tmp_path, influx3_threaded, retention="30d")
    runner = CliRunner()
    first = runner.invoke(app, ["apply", "-c", str(path)])
    assert first.exit_code == 0, first.output
    creates = [r for r in influx3_threaded.requests if r.method == "POST"]
    assert [r.json() for r in creates] == [
        {"db": "hot", "retention_period": "720h"},
        {"db": "warm"},
    ]
    assert influx3_threaded.databases["hot"].retention_ns == 720 * 3600 * 10**9
    # Again, with another retention declared: nothing is sent, and apply says why.
    path = write_config(tmp_path, influx3_threaded, retention="7d")
    again = runner.invoke(app, ["apply", "-c", str(path), "--json"])
    assert again.exit_code == 0, again.output
    changes = {c["tier"]: c for c in json.loads(again.stdout)["changes"]}
    assert changes["hot"]["action"] == "none"
    assert "cannot change it afterwards" in changes["hot"]["detail"]
    assert "7d" in changes["hot"]["detail"]
    assert [r for r in influx3_threaded.requests if r.method == "POST"] == creates


def test_apply_refuses_what_3x_cannot_hold(
    tmp_path: Path, influx3_threaded: ThreadedInflux3StandIn
) -> None:
    path = write_config(tmp_path, influx3_threaded, retention="90m")
    result = CliRunner().invoke(app, ["apply", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "not a whole number of hours" in result.output
    assert not [r for r in influx3_threaded.requests if r.method == "POST"]


def test_validate_online_reports_missing_databases_fields_and_types(
    tmp_path: Path, influx3_threaded: ThreadedInflux3StandIn
) -> None:
    path = write_config(tmp_path, influx3_threaded)
    runner = CliRunner()
    missing = runner.invoke(app, ["validate", "--online", "-c", str(path)])
    assert missing.exit_code == 2, missing.output
    assert "database 'hot' does not exist" in missing.output
    influx3_threaded.write("hot", 'cpu,host=a usage="busy" 1')
    influx3_threaded.create_database("warm")
    wrong = runner.invoke(app, ["validate", "--online", "-c", str(path)])
    assert wrong.exit_code == 2, wrong.output
    assert "field 'usage' is string: mean, max cannot aggregate it" in wrong.output
    ok_dir = tmp_path / "ok"
    ok_dir.mkdir()
    influx3_threaded.write("hot", "mem,host=a usage=1.5 1")
    text = path.read_text(encoding="utf-8").replace('["cpu"]', '["mem"]')
    (ok_dir / "tierflow.toml").write_text(text, encoding="utf-8")
    good = runner.invoke(app, ["validate", "--online", "-c", str(ok_dir / "tierflow.toml")])
    assert good.exit_code == 0, good.output
    assert any(r.json()["q"].startswith("EXPLAIN SELECT") for r in _queries(influx3_threaded))


def test_validate_online_accepts_a_tags_filter_on_a_tag_the_table_lacks(
    tmp_path: Path, influx3_threaded: ThreadedInflux3StandIn
) -> None:
    """`tags = { region = "eu" }` on a table that never had `region`: InfluxQL selects no
    point there, and the run writes nothing; validate's EXPLAIN of what is sent (the column
    sent as NULL) must not call the job broken."""
    path = write_config(tmp_path, influx3_threaded)
    text = path.read_text(encoding="utf-8").replace(
        'measurements = ["cpu"]', 'measurements = ["cpu"]\ntags = { region = "eu" }'
    )
    path.write_text(text, encoding="utf-8")
    influx3_threaded.write("hot", "cpu,host=a usage=1.5 1")
    influx3_threaded.create_database("warm")
    result = CliRunner().invoke(app, ["validate", "--online", "-c", str(path)])
    assert result.exit_code == 0, result.output
    explained = [r.json()["q"] for r in _queries(influx3_threaded) if "EXPLAIN" in r.json()["q"]]
    assert explained
    assert all("NULL = 'eu'" in q for q in explained), explained


def _queries(server: ThreadedInflux3StandIn) -> list[Recorded]:
    return [r for r in server.requests if r.path == "/api/v3/query_sql"]


async def test_a_query_job_template_runs_as_read_aggregate_write(
    influx3: Influx3StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's `.sql.j2` writes where its INSERT INTO says; columns taken straight from a tag
    stay tags (Dictionary in the Parquet answer), the rest are fields of their exact types."""
    from datetime import UTC, datetime, timedelta

    from tierflow._config import Config
    from tierflow._jobs import render_job
    from tierflow._planner import Batch
    from tierflow._windows import Window

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    (tmp_path / "rollup.sql.j2").write_text(
        'INSERT INTO {{ dest.database | sql_ident }}."cpu_1h"\n'
        'SELECT date_bin(INTERVAL \'1 hour\', "time") AS "time", "host",\n'
        '  max("x") AS "x_max", sum("n") AS "n_sum", count("x") AS "x_count"\n'
        'FROM {{ source.database | sql_ident }}."cpu"\n'
        'WHERE "time" >= {{ window.start | sql_time }} AND "time" < {{ window.stop | sql_time }}\n'
        'GROUP BY date_bin(INTERVAL \'1 hour\', "time"), "host"\n',
        encoding="utf-8",
    )
    hour = 3600 * 10**9
    base = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    influx3.write(
        "hot",
        f"cpu,host=a x=1.5,n=3u {base + 1}\ncpu,host=a x=2.5,n=4u {base + 2}\n"
        f"cpu,host=b n=5u {base + hour // 2}\ncpu,host=a x=9.0 {base + hour}",
    )
    influx3.create_database("warm")
    config = Config.from_mapping(
        {
            "connections": {
                "v3": {"kind": "influxdb3", "url": influx3.url, "token": {"env": "V3_TOKEN"}}
            },
            "tiers": {
                "hot": {"connection": "v3", "bucket": "hot"},
                "warm": {"connection": "v3", "bucket": "warm"},
            },
            "jobs": {
                "rollup": {
                    "kind": "query",
                    "source": "hot",
                    "dest": "warm",
                    "every": "1h",
                    "start": "2026-01-01T00:00:00Z",
                    "template": "rollup.sql.j2",
                }
            },
        },
        base_dir=tmp_path,
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    query = render_job(config, "rollup", Batch((Window(start, start + timedelta(hours=1)),)))
    engine = InfluxDB3Engine("v3", config.connections["v3"])  # type: ignore[arg-type]
    try:
        execution = await engine.execute(query, database="warm")
    finally:
        await engine.aclose()
    table = influx3.sql("warm", 'SELECT * FROM "cpu_1h" ORDER BY "host"')
    assert (
        str(table.schema.field("host").type)
        == "dictionary<values=string, indices=int32, ordered=0>"
    )
    assert str(table.schema.field("n_sum").type) == "uint64"
    assert [{k: v for k, v in row.items() if k != "time"} for row in table.to_pylist()] == [
        {"host": "a", "x_max": 2.5, "n_sum": 7, "x_count": 2},
        {"host": "b", "x_max": None, "n_sum": 5, "x_count": 0},
    ]
    assert execution.points_written == 2


async def test_a_fingerprint_moves_when_a_late_point_lands(
    influx3: Influx3StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recheck` on a 3.x source: the fingerprint query runs (one request per statement, in the
    source database) and changes for the window a late point lands in, not for the others."""
    from datetime import UTC, datetime, timedelta

    from tierflow._config import Config
    from tierflow._jobs import fingerprints, render_fingerprint
    from tierflow._planner import Batch
    from tierflow._windows import Window

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    config = Config.from_mapping(
        {
            "connections": {
                "v3": {"kind": "influxdb3", "url": influx3.url, "token": {"env": "V3_TOKEN"}}
            },
            "tiers": {
                "hot": {"connection": "v3", "bucket": "hot"},
                "warm": {"connection": "v3", "bucket": "warm"},
            },
            "jobs": {
                "cpu_1h": {
                    "kind": "downsample",
                    "source": "hot",
                    "dest": "warm",
                    "every": "1h",
                    "start": "2026-01-01T00:00:00Z",
                    "measurements": ["cpu"],
                    "into": "{{ measurement }}_1h",
                    "aggregates": {"x": ["mean", "last"], "s": ["first"]},
                    "recheck": "1h",
                }
            },
        }
    )
    hour = 3600 * 10**9
    base = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    influx3.write("hot", f'cpu,host=a x=1.5,s="a" {base + 1}\ncpu,host=a x=2.5 {base + hour + 1}')
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = Batch.span(Window(start, start + timedelta(hours=1)), 2)
    engine = InfluxDB3Engine("v3", config.connections["v3"])  # type: ignore[arg-type]
    try:
        # The fields' types, as the runner reads them (`source_fingerprints`).
        kinds = await engine.dialect.field_types(
            engine, config.tiers["hot"], "cpu", now=batch.range.stop
        )
        types = {"cpu": {key: {str(kind) for kind in found} for key, found in kinds.items()}}
        text = render_fingerprint(config, "cpu_1h", batch, types).text
        before = fingerprints(await engine.query(text, database="hot"), batch)
        influx3.write("hot", f"cpu,host=b x=7.0 {base + hour + 5}")
        after = fingerprints(await engine.query(text, database="hot"), batch)
    finally:
        await engine.aclose()
    first, second = (window.start for window in batch.windows)
    assert before[first] == after[first]
    assert before[second] != after[second]
    assert {r.json()["db"] for r in influx3.requests} == {"hot"}


def test_run_once_downsamples_3x_hot_into_3x_warm(
    tmp_path: Path, influx3_threaded: ThreadedInflux3StandIn
) -> None:
    """The whole path through the runner (`tierflow run-once`): windows claimed, the 3.x
    statement rendered, checked and run, the outcome recorded; values computed by hand."""
    path = write_config(tmp_path, influx3_threaded)
    minute = 60 * 10**9
    base = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    influx3_threaded.write(
        "hot",
        f"cpu,host=a usage=1 {base + minute}\ncpu,host=a usage=2 {base + minute + 1}\n"
        f"cpu,host=a usage=4 {base + 2 * minute}\ncpu,host=b usage=3.5 {base + 12 * minute}\n"
        f"cpu,host=b usage=9 {base + 30 * minute}",  # not due yet
    )
    influx3_threaded.create_database("warm")
    runner = CliRunner()
    now = "2026-01-01T00:20:00Z"
    first = runner.invoke(app, ["run-once", "-c", str(path), "--now", now, "--json"])
    assert first.exit_code == 0, first.output
    rows = influx3_threaded.sql("warm", 'SELECT * FROM "cpu_5m" ORDER BY "time"').to_pylist()
    assert [(r["time"].minute, r["host"], r["usage_mean"], r["usage_max"]) for r in rows] == [
        (0, "a", 7 / 3, 4.0),
        (10, "b", 3.5, 3.5),
    ]
    again = runner.invoke(app, ["run-once", "-c", str(path), "--now", now, "--json"])
    assert again.exit_code == 0, again.output
    assert influx3_threaded.sql("warm", 'SELECT count(*) AS "n" FROM "cpu_5m"').to_pylist() == [
        {"n": 2}
    ]
