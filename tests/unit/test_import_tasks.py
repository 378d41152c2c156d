"""Turning InfluxDB 2.x tasks into jobs: the downsampling shape, query jobs whose template is the
task's Flux bounded by the window, and what is refused, saying why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tierflow._importing._translate2 import ImportedTask, translate_task

START = datetime(2026, 11, 1, tzinfo=UTC)
HEAD = 'option task = {name: "t", every: 1h, offset: 10m}\n'
READ = 'from(bucket: "hot")\n  |> range(start: -task.every)\n'
TAIL = '  |> to(bucket: "warm", org: "acme")\n'


def translated(flux: str) -> ImportedTask:
    return translate_task({"id": "01", "name": "t", "flux": flux}, "acme", START)


def test_tierflows_own_flux_becomes_a_downsample_job() -> None:
    job = translate_task(
        {
            "id": "01",
            "name": "t",
            "flux": HEAD
            + READ
            + '  |> filter(fn: (r) => r._measurement == "cpu" and r["host"] == "a" and '
            'r._field == "usage")\n'
            '  |> aggregateWindow(every: 1h, fn: max, createEmpty: false, timeSrc: "_start")\n'
            '  |> set(key: "_field", value: "usage_max")\n' + TAIL,
        },
        "acme",
        START,
    )
    assert (job.kind, job.refused, job.template) == ("downsample", [], None)
    assert job.keys["every"] == "1h"
    assert job.keys["offset"] == "10m"
    assert job.keys["tags"] == {"host": "a"}
    assert job.keys["aggregates"] == {"usage": ["max"]}
    assert (job.source, job.dest) == ("hot", "warm")


@pytest.mark.parametrize(
    "middle",
    [
        # the field keeps its name and the points are stamped at the window stop
        '  |> filter(fn: (r) => r._measurement == "cpu" and r._field == "u")\n'
        "  |> aggregateWindow(every: 1h, fn: mean)\n",
        # median: Flux's default method is not InfluxQL's
        '  |> filter(fn: (r) => r._measurement == "cpu" and r._field == "u")\n'
        '  |> aggregateWindow(every: 1h, fn: median, createEmpty: false, timeSrc: "_start")\n'
        '  |> set(key: "_field", value: "u_median")\n',
        '  |> filter(fn: (r) => r._measurement == "cpu" or r._field == "u")\n'
        '  |> aggregateWindow(every: 1h, fn: max, createEmpty: false, timeSrc: "_start")\n'
        '  |> set(key: "_field", value: "u_max")\n',
        '  |> filter(fn: (r) => r._field == "u")\n  |> map(fn: (r) => ({r with _value: 1}))\n',
    ],
)
def test_other_tasks_become_query_jobs_with_the_window_as_their_range(middle: str) -> None:
    job = translated(HEAD + READ + middle + TAIL)
    assert job.kind == "query"
    assert job.refused == []
    template = job.template
    assert template is not None
    assert "option task" not in template
    assert template.startswith(
        'from(bucket: "hot")\n  |> range(start: {{ window.start | flux_time }}, '
        "stop: {{ window.stop | flux_time }})\n"
    )
    assert "task." not in template


def test_option_values_are_written_into_the_template() -> None:
    job = translated(
        HEAD + READ + '  |> aggregateWindow(every: task.every, fn: max)\n  |> set(key: "n", '
        "value: task.name)\n" + TAIL
    )
    template = job.template
    assert template is not None
    assert "aggregateWindow(every: 1h, fn: max)" in template
    assert 'set(key: "n", value: "t")' in template


@pytest.mark.parametrize(
    ("flux", "reason"),
    [
        ('from(bucket: "hot") |> range(start: -1h)' + TAIL, "no `option task"),
        (HEAD + 'from(bucket: "hot") |> range(start: -2h)' + TAIL, "not the span between"),
        (HEAD + 'from(bucket: "hot") |> range(start: -1h, stop: -5m)' + TAIL, "not the span"),
        (HEAD + READ + "  |> filter(fn: (r) => r._time < now())" + TAIL, "now() is the"),
        (HEAD + READ + '  |> to(bucket: "warm", org: "other")\n', "outside the org"),
        (HEAD + READ + '  |> to(bucketID: "0a")\n', "not named by bucket"),
        (HEAD + READ + '  |> yield(name: "x")\n', "writes 0 buckets"),
        (HEAD + READ + '  |> to(bucket: "a")\n  |> to(bucket: "b")\n', "writes 2 buckets"),
        ('option task = {name: "t", every: 1mo}\n' + READ + TAIL, "calendar lengths"),
        ('option task = {name: "t", cron: "0 0 1,15 * *"}\n' + READ + TAIL, "uneven"),
        (HEAD + 'from(bucket: "hot")' + TAIL, "no range()"),
        (HEAD + READ + '  |> to(bucket: "warm"', "could not be read"),
    ],
)
def test_what_tierflow_cannot_do_the_same_way_is_refused_saying_why(flux: str, reason: str) -> None:
    refused = translated(flux).refused
    assert any(reason in r for r in refused), refused
