"""The cold tier end to end on the real influxd, through the `tierflow` command: an archive job
copies hot windows into Parquet, `archive verify` passes, a corrupted file makes it fail naming
the file, and `restore` writes every archived point back exactly, field types kept."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from tests.integration._helpers import archive_config
from tests.integration.conftest import field_types, read_tier
from tierflow.testing import ThrowawayInfluxd

TIERFLOW = str(Path(sys.executable).parent / "tierflow")
EVERY = timedelta(hours=1)


def tierflow(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERFLOW, *args, "-c", str(config)], capture_output=True, text=True, check=False
    )


def write_points(server: ThrowawayInfluxd, db: str, start: datetime) -> list[str]:
    rng = random.Random(11)
    lines = []
    for i in range(3000):
        nanos = int(start.timestamp()) * 10**9 + rng.randrange(0, 3 * 3600 * 10**9)
        host = rng.choice(["a b", "c,d", "e=f", "plain"])
        fields = [f"temp={rng.uniform(-50, 50)!r}", f"count={rng.randint(-(2**60), 2**60)}i"]
        if i % 3:
            fields.append(f"ok={'true' if i % 2 else 'false'}")
        if i % 5 == 0:
            fields.append('note="say \\"hi\\""')
        tag = host.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")
        lines.append(f"sensor,host={tag},site=s{i % 2} {','.join(fields)} {nanos}")
    lines.append(f"other v=1i {int(start.timestamp()) * 10**9 + 5}")
    server.write(lines, db=db, precision="ns")
    return lines


def config(tmp_path: Path, url: str, db: str, start: datetime) -> Path:
    return archive_config(
        tmp_path,
        url,
        f"{db}/autogen",
        ["sensor", "other"],
        every="1h",
        start=start,
        restored=f"{db}/warm",
    )


def test_archive_verify_corrupt_restore(influxd: ThrowawayInfluxd, db: str, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    write_points(influxd, db, start)
    path = config(tmp_path, influxd.url, db, start)
    now = (start + 3 * EVERY).isoformat()

    ran = tierflow("run-once", "--now", now, "--json", config=path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    assert (report["succeeded"], report["failed"]) == (3, 0)

    verified = tierflow("archive", "verify", "cold", "--json", config=path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    # Every archived file holds exactly the source's points of its window.
    files = sorted((tmp_path / "archive").rglob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    hot = read_tier(influxd, db, "autogen")
    assert rows == len(hot)

    restored = tierflow(
        "restore",
        "cold",
        "--from",
        start.isoformat(),
        "--to",
        (start + 3 * EVERY).isoformat(),
        "--into",
        "restored",
        "--json",
        config=path,
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert json.loads(restored.stdout)["points"] == len(hot)
    assert read_tier(influxd, db, "warm") == hot
    for measurement in ("sensor", "other"):
        assert field_types(influxd, db, "warm", measurement) == field_types(
            influxd, db, "autogen", measurement
        )

    # Flip one byte in the middle of one file: verify now fails and names it.
    victim = files[len(files) // 2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    broken = tierflow("archive", "verify", "cold", "--json", config=path)
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert len(problems) == 1
    assert victim.name in problems[0]


def test_archive_sql_over_the_cold_tier(influxd: ThrowawayInfluxd, db: str, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    write_points(influxd, db, start)
    path = config(tmp_path, influxd.url, db, start)
    assert (
        tierflow("run-once", "--now", (start + 3 * EVERY).isoformat(), config=path).returncode == 0
    )

    result = tierflow(
        "archive", "query", "cold", 'SELECT count(*) AS n FROM "sensor"', "--json", config=path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["rows"] == [[3000]]
