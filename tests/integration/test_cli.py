"""The real `tierflow` console script, run as a subprocess with `--json`, against a real influxd:
exit codes, the JSON shapes machines rely on, and what ends up in the warm tier."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    EVERY,
    assert_tier,
    expected_tier,
    grid,
    job,
    telemetry,
    write_points,
)
from tests.integration._support import free_port
from tests.integration.conftest import WARM_RP, ConfigWriter, read_tier
from tierflow.testing import ThrowawayInfluxd

TIERFLOW = Path(sys.executable).parent / "tierflow"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
RUN_KEYS = {"job", "start", "stop", "status", "attempts", "error"}
STATUS_KEYS = {
    "job",
    "watermark",
    "lag_seconds",
    "last_status",
    "failed_windows",
    "pending_windows",
}


def tierflow(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return subprocess.run(
        [str(TIERFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stderr}"
    return json.loads(result.stdout)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_strings(start: datetime, count: int) -> list[tuple[str, str]]:
    return [(rfc3339(start + i * EVERY), rfc3339(start + (i + 1) * EVERY)) for i in range(count)]


@pytest.fixture
def bad_config(tmp_path: Path, write_config: ConfigWriter, start: datetime) -> Path:
    return write_config("db_unused", {"down": job(start, every="5x")})


def test_validate_accepts_a_good_config(
    tmp_path: Path, write_config: ConfigWriter, start: datetime
) -> None:
    config = write_config("db_unused", {"down": job(start)}, url=f"http://127.0.0.1:{free_port()}")

    body = ok_json(tierflow("validate", "-c", config, "--json", cwd=tmp_path))

    assert (body["valid"], body["config"], body["jobs"]) == (True, str(config), ["down"])
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize("command", [["validate"], ["run-once", "--now", "2030-01-01T00:00:00Z"]])
def test_a_broken_config_exits_2_naming_file_key_and_value_and_writes_nothing(
    tmp_path: Path, bad_config: Path, command: list[str]
) -> None:
    result = tierflow(*command, "-c", bad_config, "--json", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert str(bad_config) in result.stderr
    assert 'every = "5x"' in result.stderr
    assert "invalid duration" in result.stderr
    assert not (tmp_path / "state.db").exists()


def test_a_broken_config_error_names_the_table(tmp_path: Path, bad_config: Path) -> None:
    result = tierflow("validate", "-c", bad_config, cwd=tmp_path)

    assert result.returncode == 2
    assert "[jobs.down] every" in result.stderr


def test_a_config_value_that_looks_like_markup_is_reported_not_a_crash(
    tmp_path: Path, write_config: ConfigWriter, start: datetime
) -> None:
    config = write_config("db_unused", {"down": job(start, every="[/]")})

    result = tierflow("validate", "-c", config, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert 'every = "[/]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_shows_the_due_windows_and_their_query_without_a_server(
    tmp_path: Path, write_config: ConfigWriter, start: datetime
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = write_config("db_plan", {"down": job(start)}, url=url)
    now = start + 3 * EVERY + timedelta(seconds=30)

    body = ok_json(tierflow("plan", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path))
    elsewhere = now.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    same = ok_json(tierflow("plan", "-c", config, "--now", elsewhere, "--json", cwd=tmp_path))

    assert "+05:30" in elsewhere
    assert same == body

    (plan,) = body["jobs"]
    assert body["now"] == rfc3339(now)
    assert plan["job"] == "down"
    assert (plan["windows_due"], plan["windows_skipped"], plan["queries"]) == (3, 0, 1)
    # The three windows are coalesced into one batch: one query covering all of them.
    (batch,) = plan["batches"]
    assert (batch["action"], batch["window_count"]) == ("run", 3)
    assert [batch["start"], batch["stop"]] == [rfc3339(start), rfc3339(start + 3 * EVERY)]
    assert RFC3339_UTC.fullmatch(batch["start"])
    assert RFC3339_UTC.fullmatch(batch["stop"])
    assert "windows" not in batch  # listed only when asked
    query = batch["query"]
    assert "SELECT" in query
    assert f'INTO "db_plan"."{WARM_RP}"."sensor"' in query
    assert f"time >= '{rfc3339(start)}'" in query
    assert f"time < '{rfc3339(start + 3 * EVERY)}'" in query

    listed = ok_json(
        tierflow("plan", "-c", config, "--now", rfc3339(now), "--json", "--windows", cwd=tmp_path)
    )
    (expanded,) = listed["jobs"][0]["batches"]
    assert [(w["start"], w["stop"]) for w in expanded["windows"]] == window_strings(start, 3)
    assert {k: v for k, v in expanded.items() if k != "windows"} == batch


@pytest.mark.parametrize("site", ["[red]x", "[/]"])
def test_plan_for_people_shows_the_query_as_it_runs(
    tmp_path: Path, write_config: ConfigWriter, start: datetime, site: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = write_config("db_plan", {"down": job(start, tags={"site": site})}, url=url)

    result = tierflow("plan", "-c", config, "--now", rfc3339(start + EVERY), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"\"site\" = '{site}'" in result.stdout


def test_run_once_backfill_status_and_history(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    write_config: ConfigWriter,
    start: datetime,
) -> None:
    points = telemetry(11, start)
    write_points(influxd, db, points)
    config = write_config(db, {"down": job(start)})
    now = start + 6 * EVERY

    first = ok_json(
        tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path)
    )
    again = ok_json(
        tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path)
    )
    backfill = ok_json(
        tierflow(
            "backfill",
            "down",
            "--from",
            rfc3339(start + EVERY),
            "--to",
            rfc3339(start + 3 * EVERY),
            "--now",
            rfc3339(now),
            "--json",
            "-c",
            config,
            cwd=tmp_path,
        )
    )
    later = now + 2 * EVERY
    status = ok_json(
        tierflow("status", "-c", config, "--now", rfc3339(later), "--json", cwd=tmp_path)
    )
    history = ok_json(tierflow("history", "down", "-c", config, "--json", cwd=tmp_path))

    assert {"runs", "succeeded", "failed"} <= set(first)
    assert all(set(run) >= RUN_KEYS for run in first["runs"])
    assert [(r["start"], r["stop"]) for r in first["runs"]] == window_strings(start, 6)
    assert {(r["job"], r["status"], r["attempts"], r["error"]) for r in first["runs"]} == {
        ("down", "succeeded", 1, None)
    }
    assert (first["succeeded"], first["failed"]) == (6, 0)
    assert (again["runs"], again["succeeded"], again["failed"]) == ([], 0, 0)
    assert [(r["start"], r["stop"]) for r in backfill["runs"]] == window_strings(start + EVERY, 2)
    assert {(r["status"], r["attempts"]) for r in backfill["runs"]} == {("succeeded", 2)}
    assert (backfill["succeeded"], backfill["failed"]) == (2, 0)
    assert (tmp_path / "state.db").exists()  # where the config says, and only after a run
    assert_tier(
        read_tier(influxd, db, WARM_RP),
        expected_tier(points, grid(start, EVERY, 6)),
    )

    assert status["now"] == rfc3339(later)
    (row,) = status["jobs"]
    assert {key: row[key] for key in STATUS_KEYS} == {
        "job": "down",
        "watermark": rfc3339(now),
        "lag_seconds": (later - now).total_seconds(),
        "last_status": "succeeded",
        "failed_windows": 0,
        "pending_windows": 2,
    }

    assert history["job"] == "down"
    attempts = history["attempts"]
    # One row per run of windows claimed together: the backfill's two, the first run's six.
    assert [(a["start"], a["stop"], a["windows"], a["attempt"]) for a in attempts] == [
        (rfc3339(start + EVERY), rfc3339(start + 3 * EVERY), 2, 2),
        (rfc3339(start), rfc3339(start + 6 * EVERY), 6, 1),
    ]
    for attempt in attempts:
        assert attempt["status"] == "succeeded"
        assert re.fullmatch("[0-9a-f]{16}", attempt["query_hash"])
        assert re.fullmatch("[0-9a-f]{12}", attempt["template_version"])
        assert RFC3339_UTC.fullmatch(attempt["started_at"])
        assert RFC3339_UTC.fullmatch(attempt["finished_at"])
        assert attempt["error"] is None


def test_run_once_exits_1_when_a_window_fails(
    tmp_path: Path, write_config: ConfigWriter, influxd: ThrowawayInfluxd, start: datetime
) -> None:
    config = write_config("db_never_created", {"down": job(start)})
    now = rfc3339(start + 2 * EVERY)

    body = ok_json(tierflow("run-once", "-c", config, "--now", now, "--json", cwd=tmp_path), 1)
    status = ok_json(tierflow("status", "-c", config, "--now", now, "--json", cwd=tmp_path))

    assert (body["succeeded"], body["failed"]) == (0, 2)
    assert [(r["start"], r["stop"]) for r in body["runs"]] == window_strings(start, 2)
    for run in body["runs"]:
        assert run["status"] == "failed"
        assert "database not found: db_never_created" in run["error"]
    (row,) = status["jobs"]
    assert row["watermark"] == rfc3339(start)
    assert (row["last_status"], row["failed_windows"], row["pending_windows"]) == ("failed", 2, 2)


@pytest.mark.parametrize("command", ["plan", "run-once", "status"])
def test_now_without_a_zone_exits_2_and_writes_nothing(
    tmp_path: Path, write_config: ConfigWriter, start: datetime, command: str
) -> None:
    config = write_config("db_unused", {"down": job(start)}, url=f"http://127.0.0.1:{free_port()}")

    result = tierflow(command, "-c", config, "--now", "2030-01-01T00:00:00", "--json", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "no time zone" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "state.db").exists()


def test_backfill_with_from_not_before_to_exits_2(
    tmp_path: Path, write_config: ConfigWriter, start: datetime
) -> None:
    config = write_config("db_unused", {"down": job(start)}, url=f"http://127.0.0.1:{free_port()}")
    moment = rfc3339(start + EVERY)

    result = tierflow(
        "backfill", "down", "--from", moment, "--to", moment, "-c", config, "--json", cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert "is not before --to" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["run-once", "nosuchjob", "--now", "2030-01-03T00:00:00Z"],
        ["plan", "nosuchjob", "--now", "2030-01-03T00:00:00Z"],
        ["status", "nosuchjob", "--now", "2030-01-03T00:00:00Z"],
        ["history", "nosuchjob"],
        ["backfill", "nosuchjob", "--from", "2030-01-01T00:00:00Z", "--to", "2030-01-02T00:00:00Z"],
    ],
)
def test_an_unknown_job_fails_naming_the_known_ones(
    tmp_path: Path, write_config: ConfigWriter, start: datetime, command: list[str]
) -> None:
    config = write_config("db_unused", {"down": job(start)}, url=f"http://127.0.0.1:{free_port()}")

    result = tierflow(*command, "-c", config, "--json", cwd=tmp_path)

    assert result.returncode in {1, 2}, result.stderr
    assert "unknown job 'nosuchjob'" in result.stderr
    assert "down" in result.stderr
    assert result.stdout == ""


def test_an_unknown_job_is_bad_input_exit_2(
    tmp_path: Path, write_config: ConfigWriter, start: datetime
) -> None:
    config = write_config("db_unused", {"down": job(start)}, url=f"http://127.0.0.1:{free_port()}")

    result = tierflow(
        "run-once", "nosuchjob", "-c", config, "--now", "2030-01-03T00:00:00Z", cwd=tmp_path
    )

    assert result.returncode == 2
