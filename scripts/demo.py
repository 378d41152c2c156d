"""tierflow's demo: the whole lifecycle on a throwaway local InfluxDB 1.x.

Starts `influxd` on a free loopback port in a temp dir and drives the real `tierflow` command:
apply (the tiers become a database and retention policies), then six hours of synthetic IoT
telemetry land in the hot tier, then validate, plan, run-once (the catch-up: every due 5-minute
window downsampled, coalesced into hourly queries, and every due hour archived to Parquet in a
cold tier), run-once again (nothing left to do), status, archive verify, a SQL query over the
cold tier, and a restore of two archived hours into a fresh tier, counted against the hot tier.
Everything lives in a temp dir, deleted afterwards, unless `--keep DIR` (or TIERFLOW_DEMO_KEEP=DIR)
says where to leave the config, state and cold tier for a newcomer to start from. The config it
used is printed either way.

With TIERFLOW_DEMO_INFLUXDB3=standin, an optional InfluxDB 3 leg follows, against a STAND-IN of
the 3.x HTTP API (`tests/influx3_standin.py`, whose SQL runs on Apache DataFusion), not a real
InfluxDB 3 server: the 1.x hot tier relayed into a 3.x warm database (the migration path), the
same telemetry downsampled inside 3.x, archived from 3.x to Parquet, and restored into a fresh
3.x database, counted against the 3.x hot database.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tierflow.testing import ThrowawayInfluxd

SITES = ("berlin", "lyon", "turin")
DEVICES_PER_SITE = 8
STEP = timedelta(seconds=10)
HOURS = 6

CONFIG = """\
[state]
url = "sqlite:///{state}"

[connections.plant]
kind = "influxdb1"
url = "{url}"
timeout = "30s"

[tiers.hot]
connection = "plant"
bucket = "plant/hot"
retention = "7d"

[tiers.warm]
connection = "plant"
bucket = "plant/warm"
retention = "400d"

[tiers.cold]
archive = "{archive}"

[tiers.restored]
connection = "plant"
bucket = "plant/restored"
retention = "30d"

[jobs.sensor_5m]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
every = "5m"
offset = "1m"
start = "{start}"
aggregates = {{ temp = ["mean", "min", "max"], humidity = ["mean"], errors = ["sum", "count"] }}

[jobs.berlin_1h]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
tags = {{ site = "berlin" }}
into = "{{{{ measurement }}}}_berlin_1h"
every = "1h"
offset = "1m"
start = "{start}"
aggregates = {{ temp = ["mean", "max"] }}

[jobs.sensor_to_cold]
kind = "archive"
source = "hot"
dest = "cold"
measurements = ["sensor"]
every = "1h"
offset = "5m"
start = "{start}"
"""


def telemetry(start: datetime, stop: datetime) -> list[str]:
    rng = random.Random(42)
    lines = []
    for site in SITES:
        for device in range(DEVICES_PER_SITE):
            base = rng.uniform(18, 24)
            moment = start
            while moment < stop:
                nanos = int(moment.timestamp()) * 1_000_000_000
                temp = base + rng.gauss(0, 0.5)
                humidity = rng.uniform(30, 60)
                errors = rng.choices((0, 1, 2), weights=(90, 8, 2))[0]
                lines.append(
                    f"sensor,site={site},device=d{device:02d} temp={temp:.3f},"
                    f"humidity={humidity:.2f},errors={errors}i {nanos}"
                )
                moment += STEP
    return lines


def tierflow(*args: str, config: Path) -> None:
    command = [str(Path(sys.executable).parent / "tierflow"), *args, "-c", str(config)]
    print(f"\n$ tierflow {' '.join(args)}", flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, check=False)
    print(f"  (exit {done.returncode}, {time.perf_counter() - began:.2f}s)", flush=True)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        default=os.environ.get("TIERFLOW_DEMO_KEEP") or None,
        help="leave the config, state and cold tier in DIR (env TIERFLOW_DEMO_KEEP)",
    )
    return parser.parse_args()


def main() -> None:
    keep: Path | None = _arguments().keep
    leg = os.environ.get("TIERFLOW_DEMO_INFLUXDB3", "")
    if leg not in {"", "standin"}:
        print(
            f"TIERFLOW_DEMO_INFLUXDB3={leg!r}: the only 3.x leg is 'standin' (a stand-in of the "
            "3.x API whose SQL runs on DataFusion; no InfluxDB 3 server runs here)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    with_influxdb3 = leg == "standin"
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now - timedelta(hours=HOURS)).replace(minute=0, second=0)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    place: AbstractContextManager[str] = (
        nullcontext(str(keep.resolve()))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="tierflow-demo-")
    )
    with place as scratch, ThrowawayInfluxd() as db:
        print(f"influxd {db.url} (its data in a temp dir, deleted afterwards)")
        config = Path(scratch) / "tierflow.toml"
        config.write_text(
            CONFIG.format(
                state=Path(scratch) / "state.db",
                url=db.url,
                archive=Path(scratch) / "cold",
                start=start.isoformat().replace("+00:00", "Z"),
            )
        )
        print(f"\nthe config ({config}):\n")
        print(config.read_text(), flush=True)
        tierflow("apply", config=config)
        lines = telemetry(start, now)
        began = time.perf_counter()
        db.write(lines, db="plant", rp="hot", precision="ns")
        print(f"wrote {len(lines):,} raw points ({len(SITES) * DEVICES_PER_SITE} devices, every "
              f"{STEP.seconds}s since {start:%H:%M} UTC) in {time.perf_counter() - began:.2f}s")

        tierflow("validate", config=config)
        tierflow("plan", "berlin_1h", config=config)
        tierflow("run-once", config=config)
        tierflow("run-once", config=config)
        tierflow("status", config=config)
        tierflow("history", "berlin_1h", "--limit", "3", config=config)
        tierflow("archive", "verify", "cold", config=config)
        tierflow(
            "archive", "query", "cold",
            "SELECT site, count(*) AS points, round(avg(temp), 2) AS mean_temp "
            "FROM sensor GROUP BY site ORDER BY site",
            config=config,
        )
        first, second = start + timedelta(hours=1), start + timedelta(hours=3)
        tierflow("restore", "cold", "--from", _rfc3339(first), "--to", _rfc3339(second),
                 "--into", "restored", config=config)

        warm = db.query('SELECT count("temp_mean") FROM "plant"."warm"."sensor"', db="plant")
        hourly = db.query('SELECT count("temp_mean") FROM "plant"."warm"."sensor_berlin_1h"',
                          db="plant")
        print(f"\nwarm tier: {_count(warm):,} five-minute points in sensor, "
              f"{_count(hourly):,} hourly points in sensor_berlin_1h "
              f"(from {len(lines):,} raw points)")
        where = f"WHERE time >= '{_rfc3339(first)}' AND time < '{_rfc3339(second)}'"
        hot = db.query(f'SELECT count("temp") FROM "plant"."hot"."sensor" {where}', db="plant")
        back = db.query(f'SELECT count("temp") FROM "plant"."restored"."sensor" {where}',
                        db="plant")
        print(f"restored tier: {_count(back):,} points from the cold tier for "
              f"{first:%H:%M}-{second:%H:%M} UTC; the hot tier holds {_count(hot):,}")
        if _count(back) != _count(hot):
            raise SystemExit("the restore did not give back every archived point")
        if with_influxdb3:
            influxdb3_leg(Path(scratch), db.url, lines, start)
        if keep is not None:
            print(f"\nkept in {scratch}: tierflow.toml, state.db, cold/ (the influxd is gone: "
                  "point [connections.plant] url at yours, then `tierflow -c "
                  f"{config} validate`)")


CONFIG3 = """\
[state]
url = "sqlite:///{state}"

[connections.plant]
kind = "influxdb1"
url = "{url}"
timeout = "30s"

# A STAND-IN of the InfluxDB 3 HTTP API (tests/influx3_standin.py: SQL run by Apache DataFusion),
# not a real InfluxDB 3 server.
[connections.v3]
kind = "influxdb3"
url = "{url3}"
token = {{ env = "TIERFLOW_DEMO_INFLUXDB3_TOKEN" }}
timeout = "60s"

[tiers.hot]
connection = "plant"
bucket = "plant/hot"

[tiers.hot3]
connection = "v3"
bucket = "iot"

[tiers.warm3]
connection = "v3"
bucket = "iot_warm"

[tiers.cold3]
archive = "{archive}"

[tiers.restored3]
connection = "v3"
bucket = "iot_restored"

[jobs.migrate_5m]
kind = "downsample"
source = "hot"
dest = "warm3"
measurements = ["sensor"]
into = "{{{{ measurement }}}}_from_1x"
every = "5m"
offset = "1m"
start = "{start}"
aggregates = {{ temp = ["mean", "min", "max"], errors = ["sum", "count"] }}

[jobs.sensor3_5m]
kind = "downsample"
source = "hot3"
dest = "warm3"
measurements = ["sensor"]
every = "5m"
offset = "1m"
start = "{start}"
aggregates = {{ temp = ["mean", "min", "max"], errors = ["sum", "count"] }}

[jobs.sensor3_to_cold]
kind = "archive"
source = "hot3"
dest = "cold3"
measurements = ["sensor"]
every = "1h"
offset = "5m"
start = "{start}"
"""


def influxdb3_leg(scratch: Path, url: str, lines: list[str], start: datetime) -> None:
    """The optional 3.x leg, against the DataFusion-backed stand-in (see the module's docstring).
    The stand-in lives in `tests/`, so it needs the repository checkout and the test extras."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.influx3_standin import ThreadedInflux3StandIn

    print(
        "\n=== InfluxDB 3 leg: against a STAND-IN of the 3.x HTTP API (tests/influx3_standin.py, "
        "SQL executed by Apache DataFusion), NOT a real InfluxDB 3 server ===",
        flush=True,
    )
    with ThreadedInflux3StandIn() as server:
        os.environ["TIERFLOW_DEMO_INFLUXDB3_TOKEN"] = server.token
        config = scratch / "tierflow-influxdb3.toml"
        config.write_text(
            CONFIG3.format(
                state=scratch / "state-influxdb3.db",
                url=url,
                url3=server.url,
                archive=scratch / "cold3",
                start=_rfc3339(start),
            )
        )
        print(f"3.x stand-in {server.url}; the config ({config}):\n")
        print(config.read_text(), flush=True)
        began = time.perf_counter()
        server.write("iot", "\n".join(lines))
        print(
            f"wrote the same {len(lines):,} raw points into the stand-in's database iot in "
            f"{time.perf_counter() - began:.2f}s"
        )
        tierflow("validate", config=config)
        tierflow("run-once", config=config)
        tierflow("status", config=config)
        tierflow("archive", "verify", "cold3", config=config)
        first, second = start + timedelta(hours=1), start + timedelta(hours=3)
        tierflow(
            "restore",
            "cold3",
            "--from",
            _rfc3339(first),
            "--to",
            _rfc3339(second),
            "--into",
            "restored3",
            config=config,
        )

        def count(db: str, table: str, field: str, where: str = "") -> int:
            answer = server.sql(db, f'SELECT count("{field}") AS n FROM "{table}" {where}')
            return int(answer.column("n")[0].as_py())

        relayed = count("iot_warm", "sensor_from_1x", "temp_mean")
        downsampled = count("iot_warm", "sensor", "temp_mean")
        print(
            f"\n3.x warm database: {relayed:,} five-minute points relayed from 1.x (aggregated "
            f"by influxd), {downsampled:,} downsampled inside 3.x (aggregated by DataFusion)"
        )
        if relayed != downsampled:
            raise SystemExit("the relay and the 3.x downsample disagree on the same points")
        where = f"WHERE time >= '{_rfc3339(first)}' AND time < '{_rfc3339(second)}'"
        hot = count("iot", "sensor", "temp", where)
        back = count("iot_restored", "sensor", "temp", where)
        print(
            f"3.x restored database: {back:,} points from the cold tier for "
            f"{first:%H:%M}-{second:%H:%M} UTC; the 3.x hot database holds {hot:,}"
        )
        if back != hot:
            raise SystemExit("the 3.x restore did not give back every archived point")


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _count(results: list[dict[str, object]]) -> int:
    series = results[0].get("series") or []
    assert isinstance(series, list)
    return int(series[0]["values"][0][1]) if series else 0


if __name__ == "__main__":
    main()
