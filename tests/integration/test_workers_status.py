"""`tierflow status` lists the `tierflow run` workers sharing a PostgreSQL state: real daemon
processes, one killed (-9) and one paused (SIGSTOP) then resumed, then stopped cleanly."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration._helpers import job
from tests.integration._support import ok_json, processes, run_tierflow, spawn
from tests.integration.conftest import config_tables, write_toml
from tierflow.testing import ThrowawayInfluxd

GONE_AFTER = 30  # seconds without a beat (tierflow._state._worker.GONE_AFTER)


def workers(config: Path) -> dict[int, dict[str, Any]]:
    body = ok_json(run_tierflow("status", "-c", config, "--json"))
    return {w["pid"]: w for w in body["workers"]}


def test_status_shows_live_gone_and_stopped_workers(
    influxd: ThrowawayInfluxd, db: str, postgres_url: str, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)  # no window comes due: the daemons idle
    tables = config_tables(url=influxd.url, db=db, state=tmp_path / "unused", jobs={})
    tables["state"] = {"url": postgres_url}
    tables["jobs.down"] = {"kind": "downsample", "source": "hot", "dest": "warm", **job(later)}
    config = write_toml(tmp_path, tables)

    with processes() as spawned:
        killed, paused = spawn("run", "-c", config), spawn("run", "-c", config)
        spawned += [killed, paused]
        started = {d.process.pid: d.wait_for("daemon_started", timeout=30) for d in spawned}
        both = workers(config)
        killed.process.send_signal(signal.SIGKILL)
        paused.process.send_signal(signal.SIGSTOP)
        silent_since = time.monotonic()
        killed.wait(timeout=10)
        time.sleep(GONE_AFTER + 2)
        neither = workers(config)
        paused.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20
        while (back := workers(config))[paused.process.pid]["state"] != "live":
            assert time.monotonic() < deadline, paused.describe()
            time.sleep(0.5)
        paused.send(signal.SIGTERM)
        paused.wait_expecting({0}, timeout=30)
        after = workers(config)

    a, b = killed.process.pid, paused.process.pid
    assert {pid: (w["state"], w["jobs"], w["host"]) for pid, w in both.items()} == {
        pid: ("live", ["down"], started[pid]["worker"].split(":")[0]) for pid in (a, b)
    }
    assert {w["id"] for w in both.values()} == {e["worker"] for e in started.values()}
    assert time.monotonic() - silent_since > GONE_AFTER
    assert {pid: w["state"] for pid, w in neither.items()} == {a: "gone", b: "gone"}
    assert {pid: w["state"] for pid, w in back.items()} == {a: "gone", b: "live"}
    assert {pid: w["state"] for pid, w in after.items()} == {a: "gone", b: "stopped"}
    assert after[b]["stopped_at"] is not None
    assert after[a]["last_seen"] == neither[a]["last_seen"]  # the killed one never beat again
