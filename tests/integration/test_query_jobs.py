"""User templates (`kind = "query"`) on the real influxd, and `tierflow validate [--online]`, run
as the real console script: a query that breaks a dispatch rule is refused by `validate` (exit 2,
naming job, template and problem) and by the runner (a failed window, nothing sent), and a
changed template shows in `history`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    EVERY,
    assert_tier,
    expected_tier,
    grid,
    telemetry,
    write_points,
)
from tests.integration.conftest import WARM_RP, read_tier, toml_value
from tests.integration.test_cli import tierflow
from tierflow.testing import ThrowawayInfluxd

GOOD = (
    "SELECT count({{ 'temp' | influxql_ident }}) AS {{ 'temp_count' | influxql_ident }}\n"
    "INTO {{ dest.database | influxql_ident }}.{{ dest.retention_policy | influxql_ident }}"
    ".{{ 'counted' | influxql_ident }}\n"
    "FROM {{ source.database | influxql_ident }}..{{ 'sensor' | influxql_ident }}\n"
    "WHERE time >= {{ window.start | influxql_time }}"
    " AND time < {{ window.stop | influxql_time }}\n"
    "  AND {{ 'site' | influxql_ident }} = {{ params.site | influxql_string }}\n"
    "GROUP BY time({{ window.every | influxql_duration }}), *\n"
)


def config(
    tmp_path: Path,
    url: str,
    db: str,
    template: str,
    start: datetime,
    *,
    warm_rp: str = WARM_RP,
    site: str = "berlin",
) -> Path:
    (tmp_path / "count.influxql.j2").write_text(template, encoding="utf-8")
    text = (
        "\n".join(
            [
                "[state]",
                f"url = {toml_value('sqlite:///' + str(tmp_path / 'state.db'))}",
                "[connections.plant]",
                'kind = "influxdb1"',
                f"url = {toml_value(url)}",
                "[tiers.hot]",
                'connection = "plant"',
                f"bucket = {toml_value(db + '/autogen')}",
                "[tiers.warm]",
                'connection = "plant"',
                f"bucket = {toml_value(db + '/' + warm_rp)}",
                "[jobs.count]",
                'kind = "query"',
                'source = "hot"',
                'dest = "warm"',
                'template = "count.influxql.j2"',
                'every = "5m"',
                f"start = {toml_value(start)}",
                f"params = {{ site = {toml_value(site)} }}",
            ]
        )
        + "\n"
    )
    path = tmp_path / "tierflow.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_json(*args: str | Path, cwd: Path, code: int = 0) -> Any:
    result = tierflow(*args, "--json", cwd=cwd)
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_a_query_job_runs_its_template_and_history_shows_a_changed_one(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    points = telemetry(31, start)
    write_points(influxd, db, points)
    hostile_site = "berlin' OR 'a'='a"
    path = config(tmp_path, influxd.url, db, GOOD, start, site=hostile_site)
    now = start + 2 * EVERY

    run_json("validate", "-c", path, cwd=tmp_path)
    first = run_json("run-once", "-c", path, "--now", now.isoformat(), cwd=tmp_path)
    assert (first["succeeded"], first["failed"]) == (2, 0)
    # The hostile param matched nothing (no series has that site): nothing written, no error.
    assert read_tier(influxd, db, WARM_RP) == {}

    config(tmp_path, influxd.url, db, GOOD.replace("temp_count", "n"), start)  # site berlin
    backfilled = run_json(
        "backfill",
        "count",
        "-c",
        path,
        "--from",
        start.isoformat(),
        "--to",
        (start + EVERY).isoformat(),
        "--now",
        now.isoformat(),
        cwd=tmp_path,
    )
    assert backfilled["succeeded"] == 1
    expected = expected_tier(
        points,
        grid(start, EVERY, 1),
        aggregates={"temp": ["count"]},
        keep=lambda p: dict(p.tags)["site"] == "berlin",
        into=lambda m: "counted",
    )
    assert_tier(
        read_tier(influxd, db, WARM_RP), {k: {"n": v["temp_count"]} for k, v in expected.items()}
    )

    history = run_json("history", "count", "-c", path, cwd=tmp_path)["attempts"]
    versions = [a["template_version"] for a in history]
    assert len(set(versions)) == 2
    assert versions[0] != versions[-1]
    table = tierflow("history", "count", "-c", path, cwd=tmp_path)
    assert table.returncode == 0
    assert table.stdout.count("(changed)") == 1


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("time >= {{ window.start | influxql_time }}", "time >= now() - 1h"),
            "time may only appear as",
        ),
        (
            ("{{ dest.retention_policy | influxql_ident }}", "{{ 'autogen' | influxql_ident }}"),
            "is not the job's dest tier",
        ),
        (
            ("{{ params.site | influxql_string }}", "'{{ params.site }}'"),
            "reached the query without a quoting filter",
        ),
    ],
)
def test_a_query_that_breaks_a_rule_is_refused_by_validate_and_never_sent(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    start: datetime,
    change: tuple[str, str],
    problem: str,
) -> None:
    write_points(influxd, db, telemetry(32, start))
    old, new = change
    assert old in GOOD
    path = config(tmp_path, influxd.url, db, GOOD.replace(old, new), start)

    result = tierflow("validate", "-c", path, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "job count, template count.influxql.j2: " in result.stderr
    assert problem in result.stderr

    runs = tierflow(
        "run-once", "-c", path, "--now", (start + EVERY).isoformat(), "--json", cwd=tmp_path
    )
    assert runs.returncode == 1
    (window,) = json.loads(runs.stdout)["runs"]
    assert window["status"] == "failed"
    assert problem in window["error"]
    assert read_tier(influxd, db, WARM_RP) == {}
    assert read_tier(influxd, db, "autogen")  # untouched, and nothing reached the warm tier


def test_validate_online_checks_databases_and_retention_policies(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    good = config(tmp_path, influxd.url, db, GOOD, start)
    assert tierflow("validate", "--online", "-c", good, cwd=tmp_path).returncode == 0

    missing_rp = config(tmp_path, influxd.url, db, GOOD, start, warm_rp="nope")
    result = tierflow("validate", "--online", "-c", missing_rp, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"connection plant: tier warm: database '{db}' has no retention policy 'nope'" in (
        result.stderr
    )
    assert "create it with `tierflow apply`)" in result.stderr
    # Offline, the same config is fine: only the server knows its retention policies.
    assert tierflow("validate", "-c", missing_rp, cwd=tmp_path).returncode == 0

    gone = config(tmp_path, influxd.url, db + "_missing", GOOD, start)
    result = tierflow("validate", "--online", "-c", gone, cwd=tmp_path)
    assert result.returncode == 2
    assert "database not found" in result.stderr
    assert "(create it with `tierflow apply`)" in result.stderr


def test_validate_online_with_the_server_down_exits_1(tmp_path: Path, start: datetime) -> None:
    from tests.integration._support import free_port

    path = config(tmp_path, f"http://127.0.0.1:{free_port()}", "db", GOOD, start)
    result = tierflow("validate", "--online", "-c", path, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "unreachable" in result.stderr


def test_plan_shows_the_rendered_user_query(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    path = config(tmp_path, influxd.url, db, GOOD, start)
    body = run_json(
        "plan",
        "-c",
        path,
        "--now",
        (start + EVERY + timedelta(seconds=1)).isoformat(),
        cwd=tmp_path,
    )
    (batch,) = body["jobs"][0]["batches"]
    assert batch["window_count"] == 1
    assert "INTO" in batch["query"]
    assert "'berlin'" in batch["query"]
