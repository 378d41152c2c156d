"""A job redefined under the same name, through the real `tierflow` command on a real influxd:
run-once refuses it (exit 2) naming what changed, status/plan/validate say so, `tierflow reset`
starts it again, and the new dest ends up holding exactly what the aggregates say."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from tests.integration._helpers import (
    EVERY,
    assert_tier,
    expected_tier,
    grid,
    job,
    telemetry,
    write_points,
)
from tests.integration.conftest import WARM_RP, ConfigWriter, read_tier
from tests.integration.test_cli import ok_json, rfc3339, tierflow
from tierflow.testing import ThrowawayInfluxd

NEW_RP = "warm2"


def redefine(write_config: ConfigWriter, db: str, start: datetime, **changes: object) -> Path:
    """The config with the job changed, and a second warm tier (`warm2`) beside the first."""
    config = write_config(db, {"down": job(start, **changes)})
    with config.open("a", encoding="utf-8") as text:
        text.write(f'\n[tiers.{NEW_RP}]\nconnection = "plant"\nbucket = "{db}/{NEW_RP}"\n')
    return config


def test_a_job_whose_dest_changed_is_refused_until_reset_then_fills_the_new_tier(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    write_config: ConfigWriter,
    start: datetime,
) -> None:
    influxd.execute(f'CREATE RETENTION POLICY "{NEW_RP}" ON "{db}" DURATION 400d REPLICATION 1')
    points = telemetry(23, start)
    write_points(influxd, db, points)
    now = rfc3339(start + 6 * EVERY)
    expected = expected_tier(points, grid(start, EVERY, 6))

    config = redefine(write_config, db, start)
    first = ok_json(tierflow("run-once", "-c", config, "--now", now, "--json", cwd=tmp_path))
    assert first["succeeded"] == 6
    assert_tier(read_tier(influxd, db, WARM_RP), expected)

    config = redefine(write_config, db, start, dest=NEW_RP)
    refused = tierflow("run-once", "-c", config, "--now", now, "--json", cwd=tmp_path)
    old, new = f"influxdb1 {influxd.url} {db}/{WARM_RP}", f"influxdb1 {influxd.url} {db}/{NEW_RP}"
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == ""
    assert "job down was redefined" in refused.stderr
    assert f"dest: {old} → {new}" in refused.stderr
    assert "tierflow reset down" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert read_tier(influxd, db, NEW_RP) == {}  # nothing ran

    status = ok_json(tierflow("status", "-c", config, "--now", now, "--json", cwd=tmp_path))
    (row,) = status["jobs"]
    assert row["definition"]["state"] == "changed"
    assert row["definition"]["changes"] == [{"key": "dest", "old": old, "new": new}]
    for_people = tierflow("status", "-c", config, "--now", now, cwd=tmp_path)
    assert for_people.returncode == 0, for_people.stderr
    # A mark after the name (80 columns hold no definition column), what changed under the table.
    assert "down!" in for_people.stdout
    assert f"down: redefined since its ledger was recorded (dest: {old} → {new})" in (
        " ".join(for_people.stdout.split())
    )
    plan = ok_json(tierflow("plan", "-c", config, "--now", now, "--json", cwd=tmp_path))
    assert plan["jobs"][0]["definition"]["changes"][0]["key"] == "dest"
    validate = tierflow("validate", "-c", config, cwd=tmp_path)
    assert validate.returncode == 2
    assert f"dest: {old} → {new}" in validate.stderr

    dry = ok_json(tierflow("reset", "down", "--dry-run", "-c", config, "--json", cwd=tmp_path))
    assert (dry["windows_forgotten"], dry["watermark_before"], dry["watermark_after"]) == (
        6,
        now,
        rfc3339(start),
    )
    assert tierflow("run-once", "-c", config, "--now", now, cwd=tmp_path).returncode == 2

    reset = ok_json(tierflow("reset", "down", "-c", config, "--json", cwd=tmp_path))
    assert (reset["dry_run"], reset["windows_forgotten"]) == (False, 6)
    again = ok_json(tierflow("run-once", "-c", config, "--now", now, "--json", cwd=tmp_path))
    assert (again["succeeded"], again["failed"]) == (6, 0)
    assert_tier(read_tier(influxd, db, NEW_RP), expected)
    assert read_tier(influxd, db, NEW_RP) == read_tier(influxd, db, WARM_RP)  # old tier kept

    # A setting that changes when windows run, not what they write, needs nothing.
    config = redefine(write_config, db, start, dest=NEW_RP, offset="1m", parallel_windows=2)
    later = rfc3339(start + 7 * EVERY + EVERY)
    status = ok_json(tierflow("status", "-c", config, "--now", later, "--json", cwd=tmp_path))
    assert status["jobs"][0]["definition"] == {
        "state": "same",
        "digest": status["jobs"][0]["definition"]["digest"],
        "changes": [],
    }
    more = ok_json(tierflow("run-once", "-c", config, "--now", later, "--json", cwd=tmp_path))
    assert (more["succeeded"], more["failed"]) == (1, 0)


async def test_a_ledger_from_before_definitions_keeps_running_and_records_one(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    write_config: ConfigWriter,
    start: datetime,
) -> None:
    write_points(influxd, db, telemetry(5, start))
    config = redefine(write_config, db, start)
    ok_json(
        tierflow(
            "run-once", "-c", config, "--now", rfc3339(start + 2 * EVERY), "--json", cwd=tmp_path
        )
    )
    # What a state file written before definitions were recorded holds: a ledger, no definition.
    state = sqlite3.connect(tmp_path / "state.db")
    with state:
        state.execute("DELETE FROM job_definitions")
    state.close()

    result = tierflow(
        "--log-level",
        "info",
        "run-once",
        "-c",
        config,
        "--now",
        rfc3339(start + 3 * EVERY),
        "--json",
        cwd=tmp_path,
    )

    assert ok_json(result)["succeeded"] == 1  # only the new window: the ledger was kept
    assert '"event": "definition_recorded"' in result.stderr
    assert '"previous": "unrecorded"' in result.stderr
    status = ok_json(tierflow("status", "-c", config, "--json", cwd=tmp_path))
    assert status["jobs"][0]["definition"]["state"] == "same"
