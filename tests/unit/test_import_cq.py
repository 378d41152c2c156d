"""Reading continuous queries (as 1.6.7's `SHOW CONTINUOUS QUERIES` returned them, seen) and
turning them into jobs: what carries over, what becomes a query job, what is refused."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tierflow._config import Config
from tierflow._errors import InvalidInputError
from tierflow._importing._cq import Dimension, Name, parse_continuous_query
from tierflow._importing._influxdb1 import ContinuousQueryText, influxdb1_config
from tierflow._importing._server import Connection
from tierflow._importing._translate1 import cron_for, translate_cq
from tierflow._validation import check_jobs
from tierflow._windows import EPOCH, CronSchedule

START = datetime(2026, 11, 1, tzinfo=UTC)

# Texts as the 1.6.7 server returned them (seen), normalised by it.
SEEN = {
    "cq1": "CREATE CONTINUOUS QUERY cq1 ON tele BEGIN SELECT mean(temp) AS temp_mean, max(temp) "
    "AS temp_max INTO tele.warm.sensor FROM tele.autogen.sensor GROUP BY time(5m), * END",
    "cq2": "CREATE CONTINUOUS QUERY cq2 ON tele RESAMPLE EVERY 10m FOR 1h BEGIN SELECT "
    "count(temp) INTO tele.warm.:MEASUREMENT FROM tele.autogen.sensor, tele.autogen./^cp.*/ "
    "WHERE site = 'berlin' AND temp > 3 GROUP BY time(30m, 15m), site fill(0) END",
    "cq3": "CREATE CONTINUOUS QUERY cq3 ON tele BEGIN SELECT mean(*) INTO tele.autogen.agg FROM "
    "tele.autogen.sensor GROUP BY time(1h, -10m) TZ('Europe/Berlin') END",
    "c q4": 'CREATE CONTINUOUS QUERY "c q4" ON "we ird" BEGIN SELECT percentile(temp, 95) AS p, '
    'mean(temp) * 2, mean("te mp") AS "x y" INTO "we ird"."r\\"p"."m,x" FROM '
    '"we ird".autogen."sen sor" WHERE "s i" = \'its\\\'x\\\\\' GROUP BY time(1d), "s i" '
    "fill(none) END",
    "cq9": 'CREATE CONTINUOUS QUERY cq9 ON "we ird" BEGIN SELECT max(temp::integer) AS "select", '
    'count("group") INTO "we ird".autogen.m7 FROM "we ird".autogen.x GROUP BY time(1h) '
    "fill(-1.5) END",
}


def test_reads_the_servers_normalised_text() -> None:
    cq = parse_continuous_query("cq2", SEEN["cq2"])
    assert cq.database == "tele"
    assert (cq.resample_every, cq.resample_for) == (timedelta(minutes=10), timedelta(hours=1))
    assert cq.into == Name("tele", "warm", None, backreference=True)
    assert cq.sources == (
        Name("tele", "autogen", "sensor"),
        Name("tele", "autogen", None, regex="/^cp.*/"),
    )
    assert (cq.interval, cq.offset) == (timedelta(minutes=30), timedelta(minutes=15))
    assert cq.dimensions == (Dimension("tag", "site"),)
    assert cq.fill == "0"
    assert cq.clauses["where"] == "WHERE site = 'berlin' AND temp > 3"


def test_quoted_names_and_escapes() -> None:
    cq = parse_continuous_query("c q4", SEEN["c q4"])
    assert cq.database == "we ird"
    assert cq.into == Name("we ird", 'r"p', "m,x")
    assert cq.sources == (Name("we ird", "autogen", "sen sor"),)
    assert [f.output for f in cq.fields] == ["p", None, "x y"]
    assert (cq.fields[2].function, cq.fields[2].field) == ("mean", "te mp")
    assert cq.fields[1].text == "mean(temp) * 2"
    assert [t.value for t in cq.where] == ["s i", "=", "its'x\\"]
    assert cq.dimensions == (Dimension("tag", "s i"),)
    assert cq.fill == "none"


def test_negative_offsets_are_taken_modulo_the_interval_as_influxql_does() -> None:
    cq = parse_continuous_query("cq3", SEEN["cq3"])
    assert cq.offset == timedelta(minutes=50)
    assert cq.clauses["tz"] == "TZ('Europe/Berlin')"


@pytest.mark.parametrize(
    "text",
    [
        "CREATE CONTINUOUS QUERY x ON db BEGIN SELECT mean(v) INTO m FROM s END",
        "CREATE CONTINUOUS QUERY x ON db BEGIN SELECT mean(v) INTO m FROM s GROUP BY time(5m)",
        "CREATE CONTINUOUS QUERY x ON db BEGIN SELECT mean(v) FROM s GROUP BY time(5m) END",
        "CREATE CONTINUOUS QUERY x ON db BEGIN SELECT mean(v) INTO a.b.c.d FROM s "
        "GROUP BY time(5m) END",
        "CREATE CONTINUOUS QUERY x ON db BEGIN SELECT mean(v) INTO m FROM s "
        "GROUP BY time(5m) ~ END",
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_continuous_query("x", text)


@pytest.mark.parametrize(
    ("interval", "offset", "cron"),
    [
        (timedelta(minutes=10), timedelta(minutes=3), "3,13,23,33,43,53 * * * *"),
        (timedelta(hours=1), timedelta(minutes=15), "15 * * * *"),
        (timedelta(hours=6), timedelta(hours=2, minutes=30), "30 2,8,14,20 * * *"),
        (timedelta(days=1), timedelta(hours=6), "0 6 * * *"),
        # Epoch-aligned weeks start on Thursdays: three days later is a Sunday.
        (timedelta(weeks=1), timedelta(days=3, hours=1), "0 1 * * 0"),
    ],
)
def test_cron_ticks_at_exactly_the_shifted_bucket_starts(
    interval: timedelta, offset: timedelta, cron: str
) -> None:
    assert cron_for(interval, offset) == cron
    schedule = CronSchedule(cron)
    begin = datetime(2026, 3, 28, 22, 7, tzinfo=UTC)  # across a European DST change
    window = schedule.first_window(begin)
    for _ in range(50):
        # Each window is one bucket of GROUP BY time(interval, offset), computed here.
        assert (window.start - EPOCH - offset) % interval == timedelta(0)
        assert window.stop - window.start == interval
        window = schedule.next_window(window)


@pytest.mark.parametrize(
    ("interval", "offset"),
    [
        (timedelta(minutes=7), timedelta(minutes=1)),  # 7m buckets do not repeat each hour
        (timedelta(hours=5), timedelta(hours=1)),  # nor 5h buckets each day
        (timedelta(minutes=10), timedelta(seconds=30)),  # cron has no seconds
        (timedelta(days=2), timedelta(hours=1)),
    ],
)
def test_no_cron_for_buckets_cron_cannot_tick_at(interval: timedelta, offset: timedelta) -> None:
    assert cron_for(interval, offset) is None


def cq(select: str, group: str = "time(5m), *", *, where: str = "", head: str = "") -> str:
    return (
        f"CREATE CONTINUOUS QUERY c ON db {head} BEGIN SELECT {select} INTO db.warm.:MEASUREMENT "
        f"FROM db.autogen.sensor {where} GROUP BY {group} END"
    )


def test_tz_utc_is_what_tierflow_does_anyway() -> None:
    job = translate_cq("db", "c", cq("max(v) AS v_max", "time(1d), * TZ('UTC')"), START)
    assert (job.kind, job.refused) == ("downsample", [])
    job = translate_cq("db", "c", cq("max(v)", "time(1d), * TZ('UTC')"), START)
    assert (job.kind, job.refused) == ("query", [])
    assert job.template is not None
    assert "TZ" not in job.template


def test_a_cq_tierflows_query_matches_becomes_a_downsample_job() -> None:
    job = translate_cq(
        "db",
        "c",
        cq(
            "mean(temp) AS temp_mean, count(temp) AS temp_count, max(x) AS x_max",
            where="WHERE site = 'berlin' AND host = 'h1'",
        ),
        START,
    )
    assert (job.kind, job.refused, job.template) == ("downsample", [], None)
    assert job.keys["aggregates"] == {"temp": ["mean", "count"], "x": ["max"]}
    assert job.keys["tags"] == {"site": "berlin", "host": "h1"}
    assert job.keys["every"] == "5m"
    assert "into" not in job.keys


@pytest.mark.parametrize(
    ("select", "group", "where", "why"),
    [
        ("mean(temp)", "time(5m), *", "", "InfluxDB names it 'mean', tierflow temp_mean"),
        ("mean(temp) AS temp_avg", "time(5m), *", "", "another name"),
        ("mean(*)", "time(5m), *", "", "mean_<field> per field"),
        ("percentile(temp, 90) AS temp_p", "time(5m), *", "", "not a tierflow aggregate"),
        ("mean(temp) AS temp_mean", "time(5m), site", "", "a tag list merges other tags"),
        ("mean(temp) AS temp_mean", "time(5m)", "", "no tags: every series merged"),
        ("mean(temp) AS temp_mean", "time(5m), *", "WHERE temp > 3", "not a tag filter"),
        ("mean(temp) AS temp_mean", "time(5m), *", "WHERE a = 'x' OR b = 'y'", "OR"),
        ("mean(temp) AS temp_mean", "time(5m), * fill(0)", "", "fill"),
    ],
)
def test_other_cqs_become_query_jobs_running_their_own_query(
    select: str, group: str, where: str, why: str
) -> None:
    job = translate_cq("db", "c", cq(select, group, where=where), START)
    assert job.kind == "query", why
    assert job.refused == []
    assert job.template is not None
    assert job.template.startswith(f"SELECT {select}\nINTO db.warm.:MEASUREMENT\n")
    assert "WHERE time >= {{ window.start | influxql_time }} AND time < {{ window.stop" in (
        job.template
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (cq("mean(v) AS v_mean", "time(1d), * TZ('Europe/Berlin')"), "windows are UTC"),
        (cq("mean(v) AS v_mean", "time(5m), * LIMIT 3"), "limits rows"),
        (cq("mean(v) AS v_mean", "time(5m), * SLIMIT 3"), "limits rows"),
        (cq("mean(v) AS v_mean", where="WHERE time > now() - 1h"), "time condition"),
        (cq("mean(v) AS v_mean", "time(7m, 1m), *"), "no cron expression"),
        (cq("mean(v) AS v_mean", "time(5m), * fill(0)", head="RESAMPLE FOR 1h"), "fill(0)"),
        (cq("mean(v)", "time(5m), * fill(previous)", head="RESAMPLE EVERY 1m"), "fill(previous)"),
        (cq("mean(v) AS v_mean", "time(1500ms), *"), "whole seconds"),
        ("CREATE CONTINUOUS QUERY c ON db BEGIN SELECT ` END", "could not be read"),
    ],
)
def test_what_tierflow_cannot_do_the_same_way_is_refused_saying_why(text: str, reason: str) -> None:
    job = translate_cq("db", "c", text, START)
    assert any(reason in r for r in job.refused), job.refused


@pytest.mark.parametrize(
    ("head", "recheck"),
    [
        ("", None),
        ("RESAMPLE EVERY 1m", None),  # partial results only: the final values are the same
        ("RESAMPLE FOR 5m", None),  # FOR the interval itself is the default
        ("RESAMPLE FOR 30m", "25m"),
        ("RESAMPLE EVERY 15m", "10m"),  # a longer EVERY covers EVERY (service.go)
        ("RESAMPLE EVERY 15m FOR 1h", "55m"),
    ],
)
def test_resample_becomes_recheck_over_the_span_the_cq_recomputes(
    head: str, recheck: str | None
) -> None:
    job = translate_cq("db", "c", cq("max(v) AS v_max", head=head), START)
    assert job.kind == "downsample"
    assert job.keys.get("recheck") == recheck
    # A query job cannot recheck: it waits as long as the CQ kept recomputing instead.
    query = translate_cq("db", "c", cq("max(v)", head=head), START)
    assert query.kind == "query"
    assert query.keys.get("offset") == recheck


def test_the_imported_config_loads_and_every_job_renders_a_query_that_passes_the_checks(
    tmp_path: Path,
) -> None:
    cqs = [ContinuousQueryText(db, name, text) for name, text in SEEN.items() for db in ["x"]]
    cqs += [
        ContinuousQueryText("db", "jinja", cq('max(v) AS "{{ x }}"', "time(10m), *")),
        ContinuousQueryText(
            "db",
            "regex",
            "CREATE CONTINUOUS QUERY regex ON db BEGIN SELECT max(v) INTO db.warm.:MEASUREMENT "
            "FROM db.autogen./^cp/, db.other.x GROUP BY time(5m), * END",
        ),
        ContinuousQueryText(
            "db",
            "offset",
            cq("max(v) AS v_max", "time(1h, 15m), *").replace(":MEASUREMENT", "hourly"),
        ),
    ]
    text = influxdb1_config(
        Connection("http://influx:8086"), cqs, start=START, templates=tmp_path / "t"
    )
    data = tomllib.loads(text)
    config = Config.from_mapping(data, base_dir=tmp_path)
    assert check_jobs(config) == []
    # A name holding template syntax stays literal in the template.
    assert "{% raw %}" in (tmp_path / "t" / "jinja.influxql.j2").read_text(encoding="utf-8")
    # The TZ CQ and the resampled fill(0) are left commented out, with their reasons.
    assert set(data["jobs"]) == {"cq1", "c_q4", "cq9", "jinja", "regex", "offset"}
    assert "it reads 2 retention policies" in text
    assert "# [jobs.cq3]" in text
    assert "# [jobs.cq2]" in text
    assert "fill(0) fills the empty buckets of each CQ run" in text


def test_without_a_templates_directory_query_jobs_are_left_commented_out() -> None:
    text = influxdb1_config(
        Connection("http://influx:8086"),
        [ContinuousQueryText("tele", "cq2", SEEN["cq2"])],
        start=START,
        templates=None,
    )
    assert "jobs" not in tomllib.loads(text)
    assert "run the import with --templates DIR" in text
    assert "#   WHERE time >= {{ window.start | influxql_time }}" in text
