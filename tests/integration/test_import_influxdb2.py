"""`tierflow import influxdb2` against the Flux stand-in (`tests/flux_standin.py`, which lists the
org's tasks and runs the Flux tierflow sends): tasks are imported, every query the imported
config renders is checked by the official Flux checker, the config runs with `tierflow run-once`,
and what lands in the dest bucket is compared with the tasks' aggregates computed here, by hand,
from the raw points. (No 2.x server runs here: the stand-in follows the Flux documentation.)"""

from __future__ import annotations

import json
import math
import random
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.flux_standin import FluxStandIn, Record, points_of
from tests.fluxcheck import FluxChecker, flux_checker
from tests.influx2_standin import TOKEN, running_in_thread
from tests.integration.conftest import hour_floor_days_ago
from tests.integration.test_cli import rfc3339, tierflow

__all__ = ["flux_checker"]

NS = 10**9
SITES = {"h1": "berlin", "h2": "berlin", "h3": "paris"}
SPAN = timedelta(hours=3)


def task(ident: str, name: str, flux: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "name": name, "status": "active", "flux": flux, **extra}


EXACT = task(
    "0001",
    "berlin_mean",
    'option task = {name: "berlin_mean", every: 1h}\n\n'
    'from(bucket: "hot")\n'
    "  |> range(start: -task.every)\n"
    '  |> filter(fn: (r) => r._measurement == "sensor" and r.site == "berlin"\n'
    '      and r._field == "temp")\n'
    '  |> aggregateWindow(every: 1h, fn: mean, createEmpty: false, timeSrc: "_start")\n'
    '  |> set(key: "_field", value: "temp_mean")\n'
    '  |> to(bucket: "warm", org: "acme")\n',
)
SHAPE = task(
    "0002",
    "max 30m",
    'option task = {name: "max 30m", every: 30m, offset: 5m}\n\n'
    "// the field keeps its name; the points go to another measurement\n"
    'from(bucket: "hot")\n'
    "  |> range(start: -task.every)\n"
    '  |> filter(fn: (r) => r._measurement == "sensor" and r._field == "temp")\n'
    '  |> aggregateWindow(every: task.every, fn: max, createEmpty: false, timeSrc: "_start")\n'
    '  |> set(key: "_measurement", value: "sensor_30m")\n'
    '  |> to(bucket: "warm", org: "acme")\n',
)
CRON = task(
    "0003",
    "scaled",
    'option task = {name: "scaled", cron: "0 * * * *"}\n'
    'from(bucket: "hot")\n'
    "  |> range(start: -1h, stop: now())\n"
    '  |> filter(fn: (r) => r._measurement == "sensor" and r._field == "temp")\n'
    '  |> aggregateWindow(every: 1h, fn: sum, createEmpty: false, timeSrc: "_start")\n'
    '  |> map(fn: (r) => ({r with _value: r._value * 0.5, _measurement: "scaled"}))\n'
    '  |> to(bucket: "warm")\n',
    cron="0 * * * *",
)
WIDE = task(
    "0004",
    "wide",
    'option task = {name: "wide", every: 1h}\n'
    'from(bucket: "hot") |> range(start: -2h) |> filter(fn: (r) => r._field == "temp")\n'
    '  |> aggregateWindow(every: 1h, fn: max) |> to(bucket: "warm")\n',
)
ALERT = task(
    "0005",
    "alert",
    'import "http"\noption task = {name: "alert", every: 5m}\n'
    'from(bucket: "hot") |> range(start: -5m) |> count()\n'
    '  |> map(fn: (r) => ({r with s: http.post(url: "http://x", data: bytes(v: "x"))}))\n',
)
DEFAULTS = task(
    "0006",
    "defaults",
    'option task = {name: "defaults", every: 1h}\n'
    'from(bucket: "hot") |> range(start: -task.every)\n'
    '  |> filter(fn: (r) => r._measurement == "sensor" and r._field == "temp")\n'
    '  |> aggregateWindow(every: 1h, fn: mean) |> to(bucket: "other", org: "acme")\n',
)


@pytest.fixture
def standin(flux_checker: FluxChecker) -> Iterator[FluxStandIn]:
    server = FluxStandIn(checker=flux_checker, buckets={"hot", "warm", "other"})
    with running_in_thread(server):
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path


def raw_points(t0: datetime) -> list[Record]:
    rng = random.Random(2)
    records = []
    for host, site in SITES.items():
        moment = t0 + timedelta(seconds=rng.randrange(0, 30))
        while moment < t0 + SPAN:
            ns = int(moment.timestamp()) * NS + rng.randrange(0, NS)
            value = round(rng.uniform(-5, 35), 3)
            records.append(
                {"_measurement": "sensor", "host": host, "site": site, "_time": ns}
                | {"_field": "temp", "_value": value}
            )
            moment += timedelta(seconds=rng.randrange(30, 90))
    return records


def by_window(
    records: list[Record], every: timedelta, keep: Callable[[Record], bool]
) -> dict[tuple[tuple[tuple[str, str], ...], int], list[float]]:
    """The values of each series in each window (epoch-aligned), computed here."""
    size = int(every.total_seconds()) * NS
    found: dict[tuple[tuple[tuple[str, str], ...], int], list[float]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["_time"]):
        if keep(r):
            tags = (("host", r["host"]), ("site", r["site"]))
            found[tags, r["_time"] // size * size].append(r["_value"])
    return found


def import_tasks(url: str, token_file: Path, t0: datetime, *extra: str | Path, cwd: Path) -> Any:
    return tierflow(
        "import", "influxdb2", "--url", url, "--org", "acme", "--token-file", token_file,
        "--start", rfc3339(t0), *extra, cwd=cwd,
    )  # fmt: skip


def test_imported_tasks_write_what_the_tasks_compute(
    standin: FluxStandIn, token_file: Path, tmp_path: Path, flux_checker: FluxChecker
) -> None:
    t0 = hour_floor_days_ago(2)
    now = t0 + SPAN + timedelta(hours=1)
    standin.tasks = [EXACT, SHAPE, CRON, WIDE, ALERT]
    hot = raw_points(t0)
    standin.store("hot", hot)

    result = import_tasks(standin.url, token_file, t0, "--templates", "tpl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    config_path = tmp_path / "tierflow.toml"
    config_path.write_text(result.stdout, encoding="utf-8")
    config = tomllib.loads(result.stdout)
    assert config["connections"]["influxdb2"]["token"] == {"file": str(token_file)}

    jobs = config["jobs"]
    assert set(jobs) == {"berlin_mean", "max_30m", "scaled"}
    exact = jobs["berlin_mean"]
    assert exact["kind"] == "downsample"
    assert (exact["every"], exact["measurements"]) == ("1h", ["sensor"])
    assert (exact["tags"], exact["aggregates"]) == ({"site": "berlin"}, {"temp": ["mean"]})
    assert (jobs["max_30m"]["kind"], jobs["max_30m"]["offset"]) == ("query", "5m")
    assert (jobs["scaled"]["kind"], jobs["scaled"]["cron"]) == ("query", "0 * * * *")
    assert "# [jobs.wide]" in result.stdout
    assert "range(start:-2h) is not the span between two runs" in result.stdout
    assert "# [jobs.alert]" in result.stdout

    # Every query the config renders passes tierflow's checks and the official Flux checker.
    planned = tierflow("plan", "-c", config_path, "--now", rfc3339(now), "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    scripts = {b["query"] for j in json.loads(planned.stdout)["jobs"] for b in j["batches"]}
    assert len(scripts) >= 3
    for script in scripts:
        assert flux_checker.is_valid(script), script

    ran = tierflow("run-once", "-c", config_path, "--now", rfc3339(now), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout

    expected: set[tuple[Any, ...]] = set()
    berlin = by_window(hot, timedelta(hours=1), lambda r: r["site"] == "berlin")
    for (tags, start), values in berlin.items():
        expected.add(("sensor", start, tags, "temp_mean", math.fsum(values) / len(values)))
    for (tags, start), values in by_window(hot, timedelta(minutes=30), lambda r: True).items():
        expected.add(("sensor_30m", start, tags, "temp", max(values)))
    for (tags, start), values in by_window(hot, timedelta(hours=1), lambda r: True).items():
        expected.add(("scaled", start, tags, "temp", math.fsum(values) * 0.5))
    got = {
        (m, t, tuple(sorted(tags)), f, v) for m, t, tags, f, v in points_of(standin.stored["warm"])
    }
    assert len({p[1] for p in expected}) > 3
    assert got == expected


def test_the_bare_downsampling_shape_becomes_a_query_job_running_the_tasks_own_flux(
    standin: FluxStandIn, token_file: Path, tmp_path: Path, flux_checker: FluxChecker
) -> None:
    t0 = hour_floor_days_ago(2)
    standin.tasks = [DEFAULTS]
    result = import_tasks(standin.url, token_file, t0, "--templates", "tpl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = tomllib.loads(result.stdout)["jobs"]["defaults"]
    assert job["kind"] == "query"
    assert "the downsampling shape, kept as a query job" in result.stdout
    template = Path(job["template"]).read_text(encoding="utf-8")
    assert "option task" not in template
    assert "range(start: {{ window.start | flux_time }}, stop: {{ window.stop" in template
    assert 'aggregateWindow(every: 1h, fn: mean) |> to(bucket: "other"' in template
    config_path = tmp_path / "tierflow.toml"
    config_path.write_text(result.stdout, encoding="utf-8")
    now = rfc3339(t0 + timedelta(hours=2))
    planned = tierflow("plan", "-c", config_path, "--now", now, "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    (plan,) = json.loads(planned.stdout)["jobs"]
    assert [b["start"] for b in plan["batches"]] == [rfc3339(t0), rfc3339(t0 + timedelta(hours=1))]
    for batch in plan["batches"]:
        assert flux_checker.is_valid(batch["query"]), batch["query"]
        assert f"range(start: {batch['start']}, stop: {batch['stop']})" in batch["query"]


def test_bad_input_exits_2(standin: FluxStandIn, token_file: Path, tmp_path: Path) -> None:
    t0 = hour_floor_days_ago(2)
    wrong_org = tierflow(
        "import", "influxdb2", "--url", standin.url, "--org", "nope",
        "--token-file", token_file, cwd=tmp_path,
    )  # fmt: skip
    assert wrong_org.returncode == 2
    assert "organization name" in wrong_org.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n", encoding="utf-8")
    refused = import_tasks(standin.url, wrong, t0, cwd=tmp_path)
    assert refused.returncode == 2
    assert "401" in refused.stderr
    assert "not-the-token" not in refused.stderr + refused.stdout
    unreachable = import_tasks("http://127.0.0.1:9", token_file, t0, cwd=tmp_path)
    assert unreachable.returncode == 2
    assert "Traceback" not in unreachable.stderr + refused.stderr + wrong_org.stderr
    no_token = tierflow("import", "influxdb2", "--url", standin.url, "--org", "acme", cwd=tmp_path)
    assert no_token.returncode == 2
