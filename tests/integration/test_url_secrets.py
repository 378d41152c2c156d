"""A password written into a URL never leaks, and the state lives beside the config.

Every command of the real `tierflow` process, at debug log level, with and without `--json`, on a
config whose 1.x or 2.x connection URL, S3 archive URL or state URL holds a canary password:
the canary appears in no output and in no file tierflow leaves behind, and the refusal names the
file, table and key. Then: `run-once` in one directory and `status` in another read one state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.influx2_standin import StandIn, running_in_thread
from tests.integration._helpers import SPAN, WINDOWS, job, telemetry, write_points
from tests.integration._support import free_port
from tests.integration.conftest import WARM_RP, config_text, toml_value, write_toml
from tests.integration.test_cli import rfc3339
from tests.integration.test_token_leaks import CSV, run
from tierflow.testing import ThrowawayInfluxd

CANARY = "Cnry7-pw-never-print"
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = START + timedelta(hours=2, minutes=15)
COMMANDS: list[list[str]] = [
    ["validate"],
    ["validate", "--online"],
    ["plan", "--now", NOW.isoformat()],
    ["run-once", "--now", NOW.isoformat()],
    ["status", "--now", NOW.isoformat()],
    ["history", "down"],
    ["apply", "--dry-run"],
    ["archive", "verify", "cold"],
    ["restore", "cold", "--from", START.isoformat(), "--to", NOW.isoformat(), "--into", "warm"],
]


def with_password(url: str, secret: str = CANARY) -> str:
    return url.replace("://", f"://admin:{secret}@", 1)


def write_config(
    directory: Path,
    *,
    kind: str,
    url: str,
    archive: str,
    state: str = "sqlite:///state.db",
    database: str = "db_unused",
) -> Path:
    """Hot and warm tiers on one connection, a cold tier, a downsample and an archive job."""
    (directory / "token").write_text("a-token", encoding="utf-8")
    secret = {"org": "acme", "token": {"file": str(directory / "token")}}
    hot, warm = ("hot", "warm") if kind == "influxdb2" else (database, f"{database}/{WARM_RP}")
    common = {"source": "hot", "measurements": ["sensor"], "every": "1h", "start": START}
    return write_toml(
        directory,
        {
            "state": {"url": state},
            "connections.plant": {
                "kind": kind,
                "url": url,
                **(secret if kind == "influxdb2" else {}),
            },
            "connections.plant.retry": {"attempts": 1},
            "tiers.hot": {"connection": "plant", "bucket": hot},
            "tiers.warm": {"connection": "plant", "bucket": warm},
            "tiers.cold": {"archive": archive},
            "jobs.down": {
                "kind": "downsample",
                **common,
                "dest": "warm",
                "aggregates": {"temp": ["mean"]},
            },
            "jobs.arch": {"kind": "archive", **common, "dest": "cold"},
        },
    )


@contextmanager
def standin_url() -> Iterator[str]:
    with running_in_thread(StandIn(tokens={"a-token"}, default_csv=CSV)) as standin:
        yield standin.url


S3 = f"s3://AKIAEXAMPLE:{CANARY}@bucket/x"
# An AWS secret often holds '/': the authority then seems to end inside the secret.
S3_SLASH = f"s3://AKIAEXAMPLE:a/{CANARY}/b@bucket/x"
POSTGRES = f"postgresql://tierflow:{CANARY}@db.example/tierflow"
# case: (connection kind, the URL's host, the secret's places, the problems named)
CASES: dict[str, tuple[str, str, str, list[str]]] = {
    "1.x reachable": ("influxdb1", "influxd", "url", ["[connections.plant] url"]),
    "1.x unreachable": ("influxdb1", "closed", "url", ["[connections.plant] url"]),
    "2.x": ("influxdb2", "standin", "url", ["[connections.plant] url"]),
    "s3": ("influxdb1", "influxd", "archive", ["[tiers.cold] archive", "[tiers.cold2] archive"]),
    "state": ("influxdb1", "influxd", "state", ["[state] url", "[state] url: from TIERFLOW_STATE"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_password_in_a_url_appears_nowhere(
    case: str, tmp_path: Path, influxd: ThrowawayInfluxd, db: str
) -> None:
    kind, host, where, named = CASES[case]
    plain = {"influxd": influxd.url, "closed": f"http://127.0.0.1:{free_port()}"}
    context = standin_url() if host == "standin" else nullcontext(plain[host])
    env = {"TIERFLOW_STATE": POSTGRES} if where == "state" else {}
    with context as base:
        config = write_config(
            tmp_path,
            kind=kind,
            url=with_password(base) if where == "url" else base,
            archive=S3 if where == "archive" else "archive",
            state=POSTGRES if where == "state" else "sqlite:///state.db",
            database=db,
        )
        if where == "archive":
            with config.open("a", encoding="utf-8") as more:
                more.write(f"[tiers.cold2]\narchive = {toml_value(S3_SLASH)}\n")
        # Each run is a fresh process: run them side by side.
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(
                    lambda args: run(*args, "-c", config, cwd=tmp_path, env=env),
                    [[*command, *extra] for command in COMMANDS for extra in ([], ["--json"])],
                )
            )

    printed = "\n".join(r.stdout + r.stderr for r in results)
    assert CANARY not in printed
    left = [path for path in tmp_path.rglob("*") if path.is_file() and path.name != "tierflow.toml"]
    assert not [path for path in left if CANARY.encode() in path.read_bytes()]
    assert not (tmp_path / "state.db").exists()  # refused before any state was opened
    for result in results:
        assert result.returncode == 2, result.stderr
        for problem in named:
            assert f"{config}: {problem}:" in result.stderr, result.stderr


def test_the_secret_sources_the_refusal_points_at_work(
    tmp_path: Path, db: str, influxd: ThrowawayInfluxd
) -> None:
    """The refusal's advice holds: `username` and `password = { env = … }` load and connect."""
    config = write_config(
        tmp_path, kind="influxdb1", url=influxd.url, archive="archive", database=db
    )
    text = config.read_text(encoding="utf-8").replace(
        'kind = "influxdb1"\n',
        'kind = "influxdb1"\nusername = "admin"\npassword = { env = "PW" }\n',
    )
    config.write_text(text, encoding="utf-8")
    influxd.write([f"sensor temp=1.5 {int(START.timestamp()) * 10**9}"], db=db)
    result = run("validate", "--online", "-c", config, cwd=tmp_path, env={"PW": CANARY})
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Where the state lives


def test_run_once_and_status_from_different_directories_share_one_state(
    tmp_path: Path, influxd: ThrowawayInfluxd, db: str, start: datetime
) -> None:
    """cron runs `run-once` in one directory, a person runs `status` in another: both read the
    state beside the config (a relative `sqlite:///state.db` used to follow the working
    directory, so `status` found an empty state and a second `run-once` redid everything)."""
    write_points(influxd, db, telemetry(1, start))
    home, cron, elsewhere = tmp_path / "etc", tmp_path / "cron", tmp_path / "home"
    for directory in (home, cron, elsewhere):
        directory.mkdir()
    config = home / "tierflow.toml"
    text = config_text(url=influxd.url, db=db, state=Path("state.db"), jobs={"down": job(start)})
    assert 'url = "sqlite:///state.db"' in text
    config.write_text(text, encoding="utf-8")
    now = (start + SPAN).isoformat()

    ran = run("run-once", "-c", config, "--now", now, "--json", cwd=cron)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["succeeded"] == WINDOWS

    seen = [
        run("status", "-c", config, "--now", now, "--json", cwd=where)
        for where in (cron, elsewhere, home)
    ]
    bodies = [json.loads(result.stdout) for result in seen]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["state"] == f"sqlite:///{home / 'state.db'}"
    (down,) = bodies[0]["jobs"]
    assert down["watermark"] == rfc3339(start + SPAN)
    assert (down["last_status"], down["pending_windows"], down["failed_windows"]) == (
        "succeeded",
        0,
        0,
    )
    table = run("status", "-c", config, "--now", now, cwd=elsewhere)
    assert f"state: sqlite:///{home / 'state.db'}" in table.stdout

    again = run("run-once", "-c", config, "--now", now, "--json", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"] == []  # nothing aggregated a second time
    assert {path.parent for path in tmp_path.rglob("state.db*")} == {home}


def test_a_state_file_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        kind="influxdb1",
        url="http://127.0.0.1:1",
        archive="archive",
        state="sqlite:///no/such/dir/state.db",
    )
    result = run("run-once", "-c", config, "--now", NOW.isoformat(), cwd=tmp_path)
    assert result.returncode == 2
    assert f"directory {tmp_path / 'no/such/dir'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
