"""`measurements = "*"` and `"/regex/"` on archive jobs, end to end on the real influxd through
the `tierflow` command.

The oracle is what the test wrote and the server's own answer for it: which measurements have
points in which retention policy and window is decided here, and the points each window must
hold are read back from influxd (`read_tier`, a `SELECT *` per RP that does not go through
tierflow). Restoring the whole archive into an empty database must give back exactly the
source retention policy's points, and nothing of the other policy's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fluxcheck import FluxChecker, flux_checker
from tests.influx2_standin import TOKEN, StandIn, annotated_csv
from tests.integration.conftest import (
    WARM_RP,
    Databases,
    TableBody,
    read_tier,
    sqlite_state,
    write_toml,
)
from tests.integration.test_influxdb2_transfer import (
    answer,
    archive_job,
    in_range,
    raw_points,
    run,
)
from tests.integration.test_influxdb2_transfer import config as transfer_config
from tierflow._archive import open_archive
from tierflow._config import InfluxDB1Connection, TierConfig
from tierflow._config._patterns import parse_pattern
from tierflow._engines.influxql import DIALECT as INFLUXQL
from tierflow._engines.influxql import _listing as listing
from tierflow._engines.influxql._listing import GROUP
from tierflow._state import RunStatus
from tierflow._windows import Window
from tierflow.testing import ThrowawayInfluxd

__all__ = ["flux_checker"]

TIERFLOW = str(Path(sys.executable).parent / "tierflow")
HOUR = timedelta(hours=1)


def tierflow(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERFLOW, *args, "-c", str(config)], capture_output=True, text=True, check=False
    )


def ns(moment: datetime, seconds: int = 0) -> int:
    return (int(moment.timestamp()) + seconds) * 10**9


def config(
    tmp_path: Path, url: str, db: str, start: datetime, jobs: dict[str, object], restored: str
) -> Path:
    tables: dict[str, TableBody] = {
        "state": sqlite_state(tmp_path),
        "connections.plant": {"kind": "influxdb1", "url": url},
        # The source is the RP that is not the database's default: a listing that forgot the
        # RP would read the default one (autogen) instead.
        "tiers.hot": {"connection": "plant", "bucket": f"{db}/{WARM_RP}"},
        "tiers.restored": {"connection": "plant", "bucket": f"{restored}/autogen"},
    }
    for name, measurements in jobs.items():
        tables[f"tiers.{name}_cold"] = {"archive": str(tmp_path / name)}
        tables[f"jobs.{name}"] = {
            "kind": "archive",
            "source": "hot",
            "dest": f"{name}_cold",
            "measurements": measurements,
            "every": "1h",
            "start": start,
        }
    return write_toml(tmp_path, tables)


def archived(path: Path) -> dict[tuple[str, datetime], int]:
    """(measurement, window start) → rows, of every manifest the archive at `path` holds."""
    archive = open_archive(str(path))
    return {(m.measurement, m.window.start): m.rows for m in archive.manifests()}


def expected(
    data: dict[tuple[str, int, frozenset[tuple[str, str]]], dict[str, object]],
    start: datetime,
    windows: int,
    matching: set[str] | None = None,
) -> dict[tuple[str, datetime], int]:
    """(measurement, window start) → points, from what the server holds (`read_tier`)."""
    found: Counter[tuple[str, datetime]] = Counter()
    for measurement, nanos, _ in data:
        index = (nanos - ns(start)) // (3600 * 10**9)
        if 0 <= index < windows and (matching is None or measurement in matching):
            found[(measurement, start + index * HOUR)] += 1
    return dict(found)


def test_star_and_regex_archive_what_each_window_of_the_tier_holds(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    db, restored = databases.new(), databases.new()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 10 * HOUR
    # warm (the source): cpu in windows 0-2, mem in window 1 only, a hostile name in
    # window 2, nothing in window 3; `late` is written into window 4 after windows 0-2 ran.
    hot = [
        *(f"cpu,host=h{i % 3} v={i}.5 {ns(start, 600 * i + 7)}" for i in range(18)),
        f'mem,host=a used=3i,note="x" {ns(start, 3600 + 59)}',
        f"mem,host=b used=4i {ns(start, 2 * 3600 - 1)}",
        f"odd\\ name\\,x,t=1 b=true {ns(start, 2 * 3600)}",
    ]
    # autogen (the other RP, the default): its own measurement, and cpu where warm has none
    # (window 3).
    other = [
        f"disk free=1i {ns(start, 30)}",
        f"disk free=2i {ns(start, 3600 + 30)}",
        f"cpu,host=w v=99 {ns(start, 3 * 3600 + 30)}",
    ]
    influxd.write(hot, db=db, rp=WARM_RP, precision="ns")
    influxd.write(other, db=db, precision="ns")
    path = config(
        tmp_path,
        influxd.url,
        db,
        start,
        {"every_one": "*", "only_c": "/^c|^l[a-z]+e$/"},
        restored,
    )

    plan = tierflow("plan", "--now", (start + 3 * HOUR).isoformat(), config=path)
    assert plan.returncode == 0, plan.stderr
    assert "measurements *: resolved per window" in plan.stdout
    assert f'SHOW MEASUREMENTS ON "{db}"; SELECT * FROM "{db}"."{WARM_RP}".… WHERE' in plan.stdout

    first = tierflow("run-once", "--now", (start + 3 * HOUR).isoformat(), "--json", config=path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (json.loads(first.stdout)["succeeded"], json.loads(first.stdout)["failed"]) == (6, 0)

    influxd.write(
        [f"late v=1i {ns(start, 4 * 3600 + 5)}", f"late v=2i {ns(start, 4 * 3600 + 6)}"],
        db=db,
        rp=WARM_RP,
        precision="ns",
    )
    # The definition records the pattern, so a new measurement is no redefinition.
    second = tierflow(
        "run-once",
        "--now",
        (start + 5 * HOUR).isoformat(),
        "--json",
        "--log-level",
        "info",
        config=path,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert (json.loads(second.stdout)["succeeded"], json.loads(second.stdout)["failed"]) == (4, 0)
    # Window 3 holds nothing in warm (only autogen's cpu): done, 0 points, and said so.
    nothing = [
        json.loads(line)
        for line in second.stderr.splitlines()
        if line.startswith("{") and '"measurements_none_matched"' in line
    ]
    assert {(e["job"], e["window_start"]) for e in nothing} == {
        ("every_one", (start + 3 * HOUR).isoformat().replace("+00:00", "Z")),
        ("only_c", (start + 3 * HOUR).isoformat().replace("+00:00", "Z")),
    }

    source = read_tier(influxd, db, WARM_RP)
    assert len(source) == len(hot) + 2
    assert archived(tmp_path / "every_one") == expected(source, start, 5)
    assert set(archived(tmp_path / "every_one")) >= {
        ("cpu", start),
        ("mem", start + HOUR),
        ("odd name,x", start + 2 * HOUR),
        ("late", start + 4 * HOUR),
    }
    assert archived(tmp_path / "only_c") == expected(source, start, 5, {"cpu", "late"})

    # Restoring everything the "*" archive's manifests name gives back the source RP exactly.
    restore = tierflow(
        "restore",
        "every_one_cold",
        "--from",
        start.isoformat(),
        "--to",
        (start + 5 * HOUR).isoformat(),
        "--into",
        "restored",
        "--json",
        config=path,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert read_tier(influxd, restored, "autogen") == source

    # validate --online says what the pattern resolves to now.
    online = tierflow("validate", "--online", config=path)
    assert online.returncode == 0, online.stdout + online.stderr
    said = " ".join(online.stderr.split())
    assert "job every_one" in said
    assert "resolve now to 4 measurement(s)" in said
    assert "cpu, late, mem, odd name,x" in said
    assert "job only_c, connection plant: measurements /^c|^l[a-z]+e$/ resolve now to 2" in said


@pytest.mark.parametrize("statements", [10, 1])
async def test_the_1x_listing_checks_every_candidate_in_groups_within_rp_and_window(
    influxd: ThrowawayInfluxd, db: str, monkeypatch: pytest.MonkeyPatch, statements: int
) -> None:
    # More names than one checking statement takes (in one request, or one per request); the
    # database-wide `SHOW MEASUREMENTS` lists all of them, the check keeps exactly those with
    # a point in warm in the window.
    monkeypatch.setattr(listing, "STATEMENTS", statements)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    count = 2 * GROUP + 7
    in_window = {f"m{i:03d}" for i in range(0, count, 3)}
    influxd.write(
        [
            f"m{i:03d},k=v f={i}i {ns(start, 60 + i)}"
            for i in range(count)
            if f"m{i:03d}" in in_window
        ]
        # Before and at the window's stop: not in it.
        + [f"m{i:03d} f=1i {ns(start, -1)}" for i in range(1, count, 3)]
        + [f"m{i:03d} f=1i {ns(start, 3600)}" for i in range(1, count, 3)],
        db=db,
        rp=WARM_RP,
        precision="ns",
    )
    # In the window, but in the other RP.
    influxd.write([f"m{i:03d} f=1i {ns(start, 5)}" for i in range(2, count, 3)], db=db)
    tier = TierConfig(connection="plant", bucket=f"{db}/{WARM_RP}")
    connection = InfluxDB1Connection(kind="influxdb1", url=influxd.url)
    engine = INFLUXQL.make_engine("plant", connection)
    window = Window(start, start + HOUR)
    try:
        everything = await INFLUXQL.list_measurements(engine, tier, window, {}, lambda _: True)
        tagged = await INFLUXQL.list_measurements(engine, tier, window, {"k": "v"}, lambda _: True)
        other = await INFLUXQL.list_measurements(engine, tier, window, {"k": "w"}, lambda _: True)
        fives = await INFLUXQL.list_measurements(
            engine, tier, window, {}, parse_pattern("/5$/").matches
        )
    finally:
        await engine.aclose()
    assert everything == sorted(in_window)
    assert tagged == sorted(in_window)
    assert other == []
    assert fives == sorted(name for name in in_window if name.endswith("5"))


def test_a_name_influxql_cannot_quote_fails_only_the_windows_it_has_points_in(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path
) -> None:
    # influxd takes a carriage return in a measurement name (line protocol escapes only comma
    # and space), which no InfluxQL identifier can spell. `SHOW MEASUREMENTS` lists it in every
    # window; only a window where it has points may fail for it (its points cannot be read:
    # failing loudly beats archiving the window without them). The others archive cpu.
    db, restored = databases.new(), databases.new()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 10 * HOUR
    influxd.write(
        [f"cpu v={i}i {ns(start, 3600 * i + 60)}" for i in range(3)]
        + [f"we\rird v=1i {ns(start, 3600 + 30)}"],
        db=db,
        rp=WARM_RP,
        precision="ns",
    )
    (shown,) = influxd.query(f'SHOW MEASUREMENTS ON "{db}"', db=db)[0]["series"]
    assert shown["values"] == [["cpu"], ["we\rird"]]
    path = config(tmp_path, influxd.url, db, start, {"every_one": "*"}, restored)
    ran = tierflow("run-once", "--now", (start + 3 * HOUR).isoformat(), "--json", config=path)
    report = json.loads(ran.stdout)
    assert (report["succeeded"], report["failed"]) == (2, 1), ran.stdout + ran.stderr
    assert archived(tmp_path / "every_one") == {("cpu", start): 1, ("cpu", start + 2 * HOUR): 1}
    failed = [
        json.loads(line)
        for line in ran.stderr.splitlines()
        if line.startswith("{") and '"window_failed"' in line
    ]
    assert [e["window_start"] for e in failed] == [
        (start + HOUR).isoformat().replace("+00:00", "Z")
    ]
    assert "'we\\rird'" in failed[0]["error"]
    assert "cannot quote" in failed[0]["error"]


async def test_a_name_influxql_cannot_quote_is_checked_within_rp_and_window(
    influxd: ThrowawayInfluxd, databases: Databases
) -> None:
    # Its check (a regex standing for it alone) finds it where it has a point in the window of
    # the tier's RP, and not in the other RP, before the window or at its stop.
    start = datetime(2026, 11, 20, tzinfo=UTC)
    db, other = databases.new(), databases.new()
    odd = "a\r/b.c'\"é"  # a carriage return, a slash, a dot, quotes, a non-ASCII letter
    line = odd + " v=1i {}"
    influxd.write([line.format(ns(start, 10)), "cpu v=1i " + str(ns(start, 10))], db=db, rp=WARM_RP)
    influxd.write([line.format(ns(start, 20))], db=other)  # autogen
    influxd.write([line.format(ns(start) - 1), line.format(ns(start, 3600))], db=other, rp=WARM_RP)
    connection = InfluxDB1Connection(kind="influxdb1", url=influxd.url)
    engine = INFLUXQL.make_engine("plant", connection)
    window = Window(start, start + HOUR)
    try:
        here, there = [
            await INFLUXQL.list_measurements(
                engine, TierConfig(connection="plant", bucket=f"{name}/{WARM_RP}"), window, {}, bool
            )
            for name in (db, other)
        ]
    finally:
        await engine.aclose()
    assert here == [odd, "cpu"]
    assert there == []


@pytest.mark.parametrize("missing", ["database", "retention policy"])
def test_a_tier_that_does_not_exist_fails_its_windows_not_archives_nothing(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path, missing: str
) -> None:
    # `SHOW MEASUREMENTS ON` a database that does not exist answers an empty list, no error
    # (seen on 1.6.7), and a pattern that matches none of the names reads no policy: either
    # way the listing must fail, as any other job's read of the tier would, not find "none
    # matched" and record the window done with 0 points.
    db, restored = databases.new(), databases.new()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 10 * HOUR
    influxd.write([f"cpu v=1i {ns(start, 60)}"], db=db, rp=WARM_RP, precision="ns")
    path = config(tmp_path, influxd.url, db, start, {"job": "/^nothing_matches$/"}, restored)
    bucket = f"{db}_gone/{WARM_RP}" if missing == "database" else f"{db}/gone"
    text = path.read_text(encoding="utf-8").replace(f"{db}/{WARM_RP}", bucket)
    path.write_text(text, encoding="utf-8")
    ran = tierflow("run-once", "--now", (start + 2 * HOUR).isoformat(), "--json", config=path)
    report = json.loads(ran.stdout)
    assert (report["succeeded"], report["failed"]) == (0, 2), ran.stdout + ran.stderr
    assert all(f"{missing} not found" in run["error"] for run in report["runs"])
    assert not (tmp_path / "job").exists() or archived(tmp_path / "job") == {}


def test_a_bad_regex_is_refused_at_load(influxd: ThrowawayInfluxd, db: str, tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    path = config(tmp_path, influxd.url, db, start, {"ahead": "/cpu(?=_)/", "open": "/[a/"}, db)
    for command in (("validate",), ("run-once",), ("plan",)):
        ran = tierflow(*command, config=path)
        assert ran.returncode == 2, (command, ran.stdout, ran.stderr)
        assert "Traceback" not in ran.stderr
        said = " ".join(ran.stderr.split())
        assert '[jobs.ahead] measurements = "/cpu(?=_)/"' in said
        assert "lookahead/lookbehind" in said
        assert '[jobs.open] measurements = "/[a/"' in said
        assert "unterminated character set" in said


# -- 2.x: an archive job with "*" through the recording stand-in -------------------------------


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandIn]:
    monkeypatch.setenv("TF_STANDIN_TOKEN", TOKEN)
    server = StandIn(tokens={TOKEN}, org="acme", buckets={"hot", "warm"})
    await server.start()
    yield server
    await server.stop()


async def test_a_2x_star_archive_lists_each_window_then_exports_what_it_found(
    tmp_path: Path, influxd: ThrowawayInfluxd, standin: StandIn, flux_checker: FluxChecker
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 6 * HOUR
    points = raw_points(start)  # measurement m, in windows 0 and 1 only
    exports = answer(points)

    def on_query(script: str) -> bytes:
        if "distinct(" not in script:
            return exports(script)  # type: ignore[no-any-return]
        found = [["m"]] if in_range(script, points) else []
        return annotated_csv([(["_value"], ["string"], found)], group_key=[[]])

    standin.on_query = on_query
    name, job = archive_job(start)
    path = transfer_config(
        tmp_path,
        influxd,
        standin,
        {"hot": ("cloud", "hot"), "cold": ("archive", str(tmp_path / "cold"))},
        (name, {**job, "measurements": "*"}),
    )

    runs = await run(path, start + 3 * HOUR)

    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3
    assert sum(r.points_written for r in runs) == len(points)
    scripts = [r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"]
    listings = [s for s in scripts if "distinct(" in s]
    for index, script in enumerate(listings):
        assert flux_checker.is_valid(script), script
        window = (start + index * HOUR, start + (index + 1) * HOUR)
        bounds = [t.isoformat().replace("+00:00", "Z") for t in window]
        assert f"range(start: {bounds[0]}, stop: {bounds[1]})" in script
        assert 'from(bucket: "hot")' in script
    assert len(listings) == 3
    assert archived(tmp_path / "cold") == {
        ("m", start): len(in_range(_range_script(start, start + HOUR), points)),
        ("m", start + HOUR): len(in_range(_range_script(start + HOUR, start + 2 * HOUR), points)),
    }


def _range_script(start: datetime, stop: datetime) -> str:
    bounds = [t.isoformat().replace("+00:00", "Z") for t in (start, stop)]
    return f"range(start: {bounds[0]}, stop: {bounds[1]})"
