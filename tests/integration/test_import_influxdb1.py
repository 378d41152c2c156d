"""`tierflow import influxdb1` on a real influxd: continuous queries are created on the server,
imported, and the imported config run with `tierflow run-once` over the same data; the oracle is
each CQ's own query, run by hand with InfluxDB's `SELECT … INTO` for every window into an oracle
database (the CQ scheduler's timing is not test-friendly; its exact query with explicit bounds is
what the scheduler runs). Both outputs are read from the server's disk (`tests/tsm_oracle`) and
compared point for point, field types included."""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration.conftest import WARM_RP, Databases, hour_floor_days_ago
from tests.integration.test_cli import rfc3339, tierflow
from tests.tsm_oracle import stored_points
from tierflow.testing import ThrowawayInfluxd

HOSTS = ("h1", "h2", "h3")
SITES = {"h1": "berlin", "h2": "berlin", "h3": "paris"}
DATA_SPAN = timedelta(hours=3)


@dataclass(frozen=True)
class CQ:
    """A CQ as the test writes it, in pieces, so the oracle query is built from the same pieces
    and not from anything tierflow read. `settled`: how long after a bucket ends the CQ still
    recomputes it (RESAMPLE FOR minus the interval), by hand."""

    name: str
    select: str
    into: str  # measurement (or :MEASUREMENT) in the warm policy
    group: str
    interval: timedelta
    offset: timedelta = timedelta(0)
    where: str | None = None
    fill: str | None = None
    resample: str = ""
    settled: timedelta = timedelta(0)
    expect: dict[str, Any] | None = None

    def create(self, db: str) -> str:
        return (
            f'CREATE CONTINUOUS QUERY "{self.name}" ON "{db}" {self.resample} BEGIN '
            f'SELECT {self.select} INTO "{db}"."{WARM_RP}".{self.into} FROM "{db}".."sensor" '
            + (f"WHERE {self.where} " if self.where else "")
            + f"GROUP BY {self.group}"
            + (f" fill({self.fill})" if self.fill else "")
            + " END"
        )

    def oracle(self, db: str, oracle_db: str, start: datetime, stop: datetime) -> str:
        bounds = f"time >= '{rfc3339(start)}' AND time < '{rfc3339(stop)}'"
        return (
            f'SELECT {self.select} INTO "{oracle_db}"."{WARM_RP}".{self.into} '
            f'FROM "{db}"."autogen"."sensor" WHERE {bounds}'
            + (f" AND ({self.where})" if self.where else "")
            + f" GROUP BY {self.group}"
            + (f" fill({self.fill})" if self.fill else "")
        )


CQS = [
    CQ(
        "sensor_5m",
        "mean(temp) AS temp_mean, max(temp) AS temp_max, count(errors) AS errors_count",
        ":MEASUREMENT",
        "time(5m), *",
        timedelta(minutes=5),
        resample="RESAMPLE FOR 15m",
        expect={"kind": "downsample", "every": "5m", "recheck": "10m"},
    ),
    CQ(
        "by_site",
        "mean(temp), max(errors), count(temp)",
        "by_site",
        "time(10m), site",
        timedelta(minutes=10),
        expect={"kind": "query", "every": "10m"},
    ),
    CQ(
        "hourly_shifted",
        "max(temp) AS temp_max, min(errors) AS errors_min",
        "sensor_1h",
        "time(1h, 15m), *",
        timedelta(hours=1),
        offset=timedelta(minutes=15),
        expect={"kind": "downsample", "cron": "15 * * * *"},
    ),
    CQ(
        "star_resampled",
        "mean(*)",
        "sensor_star",
        "time(10m), *",
        timedelta(minutes=10),
        resample="RESAMPLE EVERY 5m FOR 30m",
        settled=timedelta(minutes=20),
        expect={"kind": "query", "every": "10m", "offset": "20m"},
    ),
    CQ(
        "berlin_errors",
        "sum(errors) AS errors_sum",
        "berlin",
        "time(5m), *",
        timedelta(minutes=5),
        where="site = 'berlin'",
        expect={"kind": "downsample", "tags": {"site": "berlin"}, "into": "berlin"},
    ),
    CQ(
        "totals",
        "count(temp) AS n, spread(temp)",
        "totals",
        "time(15m)",
        timedelta(minutes=15),
        fill="0",
        expect={"kind": "query", "every": "15m"},
    ),
    CQ(
        "hot_hosts",
        "max(temp) AS temp_max",
        "hot_hosts",
        "time(5m), host",
        timedelta(minutes=5),
        where="temp > 20 AND site = 'berlin'",
        expect={"kind": "query", "every": "5m"},
    ),
]
REFUSED = CQ("local_days", "mean(temp)", "daily", "time(1d) TZ('Europe/Berlin')", timedelta(days=1))


def write_sensor(server: ThrowawayInfluxd, db: str, t0: datetime) -> None:
    """Three hosts, irregular timestamps, a float and an integer field, and a 40-minute gap in
    which nothing is written (empty buckets, and a fill(0) to show)."""
    rng = random.Random(14)
    lines = []
    gap = (t0 + timedelta(minutes=70), t0 + timedelta(minutes=110))
    for host in HOSTS:
        moment = t0 + timedelta(seconds=rng.randrange(0, 20))
        while moment < t0 + DATA_SPAN:
            if not gap[0] <= moment < gap[1]:
                ns = int(moment.timestamp()) * 10**9 + rng.randrange(0, 10**9)
                temp = round(rng.uniform(5, 30), 3)
                lines.append(
                    f"sensor,host={host},site={SITES[host]} temp={temp},"
                    f"errors={rng.randrange(0, 5)}i {ns}"
                )
            moment += timedelta(seconds=rng.randrange(20, 50))
    server.write(lines, db=db)


def bucket_starts(cq: CQ, begin: datetime, until: datetime) -> list[datetime]:
    """Bucket starts of `GROUP BY time(interval, offset)` from the first at or after `begin`,
    of the buckets that have ended by `until` (computed here: epoch-aligned, shifted)."""
    epoch = datetime(1970, 1, 1, tzinfo=begin.tzinfo)
    first = epoch + cq.offset + -(-(begin - epoch - cq.offset) // cq.interval) * cq.interval
    starts = []
    while first + cq.interval <= until:
        starts.append(first)
        first += cq.interval
    return starts


def run_oracle(server: ThrowawayInfluxd, cq: CQ, db: str, oracle: str, t0: datetime, now: datetime):
    """The CQ's own query, by hand, for every window it would have settled by `now`."""
    for start in bucket_starts(cq, t0, now - cq.settled):
        server.execute(cq.oracle(db, oracle, start, start + cq.interval), db=db)


def points(server: ThrowawayInfluxd, db: str) -> list[tuple[Any, ...]]:
    return sorted(
        (p.measurement, p.tags, p.field, p.time, str(p.type), repr(p.value))
        for p in stored_points(server, db, WARM_RP)
    )


def import_config(url: str, db: str, start: datetime, *extra: str | Path, cwd: Path):
    return tierflow(
        "import",
        "influxdb1",
        "--url",
        url,
        "--database",
        db,
        "--start",
        rfc3339(start),
        *extra,
        cwd=cwd,
    )


def test_imported_cqs_write_what_the_cqs_own_queries_write(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    db, oracle = databases.new(), databases.new()
    t0 = hour_floor_days_ago(2)
    # Before the data ends: the last windows hold data, so a job running a window sooner or
    # later than its CQ settles it (RESAMPLE as offset) shows.
    now = t0 + DATA_SPAN - timedelta(minutes=10)
    for cq in [*CQS, REFUSED]:
        influxd.execute(cq.create(db), db=db)
    write_sensor(influxd, db, t0)

    result = import_config(influxd.url, db, t0, "--templates", tmp_path / "templates", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config_path = tmp_path / "tierflow.toml"
    config_path.write_text(result.stdout, encoding="utf-8")
    config = tomllib.loads(result.stdout)

    # Every CQ became the job the test expects; the TZ one is left commented out, saying why.
    assert set(config["jobs"]) == {cq.name for cq in CQS}
    for cq in CQS:
        job = config["jobs"][cq.name]
        assert cq.expect is not None
        assert {k: job.get(k) for k in cq.expect} == cq.expect, cq.name
    assert "# [jobs.local_days]" in result.stdout
    assert "TZ('Europe/Berlin'): tierflow's windows are UTC" in result.stdout

    checked = tierflow("validate", "-c", config_path, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    ran = tierflow("run-once", "-c", config_path, "--now", rfc3339(now), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout

    for cq in CQS:
        run_oracle(influxd, cq, db, oracle, t0, now)
    expected, got = points(influxd, oracle), points(influxd, db)
    # Each CQ's output is there (not an empty comparison), with more than one window.
    for measurement in ("sensor", "by_site", "sensor_1h", "sensor_star", "berlin", "totals"):
        assert len({p[3] for p in expected if p[0] == measurement}) > 1, measurement
    assert {p[4] for p in expected} >= {"float", "integer"}
    assert got == expected


def test_bad_input_exits_2_naming_the_problem(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    db = databases.new()
    t0 = hour_floor_days_ago(2)
    missing = import_config(influxd.url, "no_such_db", t0, cwd=tmp_path)
    assert missing.returncode == 2
    assert "database 'no_such_db' not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    unreachable = import_config("http://127.0.0.1:9", db, t0, cwd=tmp_path)
    assert unreachable.returncode == 2, unreachable.stderr
    assert "127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    no_user = import_config(influxd.url, db, t0, "--password-env", "HOME", cwd=tmp_path)
    assert no_user.returncode == 2
    assert "a password needs --username" in no_user.stderr

    with_credentials = import_config("http://u:s3cret@127.0.0.1:9", db, t0, cwd=tmp_path)
    assert with_credentials.returncode == 2
    assert "s3cret" not in with_credentials.stderr + with_credentials.stdout


def test_password_comes_from_its_source_and_is_never_printed(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    db = databases.new()
    secret = tmp_path / "password"
    secret.write_text("pa55-word-never-shown\n", encoding="utf-8")
    result = import_config(
        influxd.url,
        db,
        hour_floor_days_ago(2),
        "--username",
        "reader",
        "--password-file",
        secret,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "pa55-word-never-shown" not in result.stdout + result.stderr
    connection = tomllib.loads(result.stdout)["connections"]["influxdb1"]
    assert connection["username"] == "reader"
    assert connection["password"] == {"file": str(secret)}


def test_templates_are_not_overwritten(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    db = databases.new()
    cq = CQS[1]
    influxd.execute(cq.create(db), db=db)
    templates = tmp_path / "templates"
    templates.mkdir()
    mine = templates / f"{cq.name}.influxql.j2"
    mine.write_text("my own\n", encoding="utf-8")
    result = import_config(
        influxd.url, db, hour_floor_days_ago(2), "--templates", templates, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "exists with other content" in result.stderr
    assert mine.read_text(encoding="utf-8") == "my own\n"
