"""The `tierflow` command through typer's CliRunner: global options on either side of the
command, and how run-once reports many failed windows."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tierflow._api import Tierflow
from tierflow._cli import app
from tierflow._cli_group import global_options_first
from tierflow._cli_report import report_runs
from tierflow._planner import Batch
from tierflow._runner import BatchRun
from tierflow._state import RunStatus, StateStore
from tierflow._windows import Window

CONFIG = """
[state]
url = "sqlite:///{state}"

[connections.plant]
kind = "influxdb1"
url = "http://127.0.0.1:9"

[tiers.hot]
connection = "plant"
bucket = "plant/autogen"

[tiers.warm]
connection = "plant"
bucket = "plant/warm"

[jobs.sensor_5m]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
every = "5m"
start = 2026-01-01T00:00:00Z
aggregates = {{ value = ["mean"] }}
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIERFLOW_CONFIG", "TIERFLOW_STATE", "TIERFLOW_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tierflow.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db"), encoding="utf-8")
    return path


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "{c}", "validate"],
        ["validate", "-c", "{c}"],
        ["--config={c}", "validate"],
        ["--log-level", "debug", "validate", "-c", "{c}"],
        ["validate", "-c", "{c}", "--log-level", "debug"],
        ["-c", "{c}", "--log-level=debug", "validate"],
        ["-c{c}", "validate", "--log-level=DEBUG"],
    ],
)
def test_config_and_log_level_go_before_or_after_the_command(config: Path, args: list[str]) -> None:
    code, output = invoke(*(a.replace("{c}", str(config)) for a in args))
    assert (code, output.strip()) == (0, f"{config}: valid (1 job(s), 2 tier(s))")
    if any("debug" in a.lower() for a in args):
        assert logging.getLogger("tierflow").level == logging.DEBUG


def test_config_after_the_command_wins_over_the_one_before(config: Path) -> None:
    code, output = invoke("-c", "missing.toml", "validate", "-c", config)
    assert code == 0, output
    code, output = invoke("-c", config, "validate", "-c", "missing.toml")
    assert code == 2
    assert "missing.toml: config file not found" in output


def test_config_before_a_subgroup_command_reaches_it(config: Path) -> None:
    code, output = invoke("-c", config, "archive", "verify", "hot")
    assert code == 2
    assert "'hot' is not a cold tier of" in output
    assert str(config) in output


def test_arguments_after_double_dash_stay_where_they_are() -> None:
    moved = global_options_first(["-c", "x", "run-once", "--", "--log-level"], frozenset())
    assert moved == ["run-once", "-c", "x", "--", "--log-level"]


def test_a_bad_log_level_is_a_usage_error_not_a_crash(config: Path) -> None:
    code, output = invoke("validate", "-c", config, "--log-level", "loud")
    assert code == 2
    assert "'loud' is not one of debug, info, warning, error" in output


def failed_runs(count: int) -> list[BatchRun]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=5)
    windows = [Window(start + i * step, start + (i + 1) * step) for i in range(count)]
    error = "connection refused: http://127.0.0.1:9"
    runs = [BatchRun("sensor_5m", Batch((w,)), RunStatus.FAILED, (3,), error) for w in windows]
    other = Window(start - step, start)
    runs.insert(0, BatchRun("sensor_5m", Batch((other,)), RunStatus.FAILED, (1,), "timeout"))
    return runs


def test_many_windows_failing_for_one_reason_are_one_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exit_:
        report_runs(failed_runs(200), as_json=False)
    assert exit_.value.exit_code == 1
    lines = capsys.readouterr().out.splitlines()
    refused = [line for line in lines if "connection refused" in line]
    assert len(refused) == 1, "\n".join(lines)
    assert "200" in refused[0]
    assert "2026-01-01T00:00:00Z" in refused[0]
    assert "2026-01-01T16:35:00Z" in refused[0]  # the 200th window's start
    assert len([line for line in lines if "timeout" in line]) == 1
    assert "0 windows succeeded, 201 failed" in lines[-1]


def test_json_keeps_every_failed_window(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        report_runs(failed_runs(200), as_json=True)
    body = json.loads(capsys.readouterr().out)
    assert body["failed"] == 201
    assert len(body["runs"]) == 201
    assert body["runs"][-1]["start"] == "2026-01-01T16:35:00Z"


def plan_config(config: Path, extra: str = "") -> Path:
    """The config with sensor_5m's catch-up in one-hour queries (the default), plus `extra`."""
    config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return config


def test_plan_json_has_each_batch_with_its_range_count_and_query(config: Path) -> None:
    # 2h30m of five-minute windows: queries of an hour (12 windows), then the half hour left.
    code, output = invoke("plan", "-c", config, "--now", "2026-01-01T02:30:00Z", "--json")
    assert code == 0, output
    body = json.loads(output)
    assert body["now"] == "2026-01-01T02:30:00Z"
    (job,) = body["jobs"]
    assert (job["job"], job["windows_due"], job["windows_skipped"], job["queries"]) == (
        "sensor_5m",
        30,
        0,
        3,
    )
    bounds = ["00:00", "01:00", "02:00", "02:30"]
    assert len(job["batches"]) == 3
    assert [(b["action"], b["start"], b["stop"], b["window_count"]) for b in job["batches"]] == [
        ("run", f"2026-01-01T{a}:00Z", f"2026-01-01T{z}:00Z", n)
        for a, z, n in zip(bounds, bounds[1:], (12, 12, 6), strict=False)
    ]
    for batch in job["batches"]:
        assert f"time >= '{batch['start']}' AND time < '{batch['stop']}'" in batch["query"]
        assert "GROUP BY time(5m)" in batch["query"]
        assert "windows" not in batch

    code, output = invoke(
        "plan", "-c", config, "--now", "2026-01-01T02:30:00Z", "--json", "--windows"
    )
    assert code == 0, output
    listed = json.loads(output)["jobs"][0]["batches"]
    assert [len(b["windows"]) for b in listed] == [12, 12, 6]
    assert listed[2]["windows"][0] == {
        "start": "2026-01-01T02:00:00Z",
        "stop": "2026-01-01T02:05:00Z",
    }
    assert [{k: v for k, v in b.items() if k != "windows"} for b in listed] == job["batches"]


def test_plan_for_people_has_a_line_and_a_query_per_batch(config: Path) -> None:
    code, output = invoke("plan", "-c", config, "--now", "2026-01-01T02:30:00Z")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "sensor_5m: 30 windows due at 2026-01-01T02:30:00Z, in 3 queries"
    assert [line for line in lines if line.startswith("  [")] == [
        "  [2026-01-01T00:00:00Z, 2026-01-01T01:00:00Z)  12 windows",
        "  [2026-01-01T01:00:00Z, 2026-01-01T02:00:00Z)  12 windows",
        "  [2026-01-01T02:00:00Z, 2026-01-01T02:30:00Z)  6 windows",
    ]
    assert len([line for line in lines if line.startswith("    SELECT")]) == 3

    code, output = invoke("plan", "-c", config, "--now", "2026-01-01T00:10:00Z", "--windows")
    assert code == 0, output
    assert output.splitlines()[1:4] == [
        "  [2026-01-01T00:00:00Z, 2026-01-01T00:10:00Z)  2 windows",
        "    [2026-01-01T00:00:00Z, 2026-01-01T00:05:00Z)",
        "    [2026-01-01T00:05:00Z, 2026-01-01T00:10:00Z)",
    ]


def test_plan_shows_the_windows_max_catchup_skips_as_one_range(config: Path) -> None:
    plan_config(config, 'max_catchup = "30m"\n')
    code, output = invoke("plan", "-c", config, "--now", "2026-01-01T02:00:00Z", "--json")
    assert code == 0, output
    (job,) = json.loads(output)["jobs"]
    assert (job["windows_due"], job["windows_skipped"], job["queries"]) == (6, 18, 1)
    assert [
        (b["action"], b["start"], b["window_count"], b["query"] is None) for b in job["batches"]
    ] == [
        ("skip", "2026-01-01T00:00:00Z", 18, True),
        ("run", "2026-01-01T01:30:00Z", 6, False),
    ]
    code, output = invoke("plan", "-c", config, "--now", "2026-01-01T02:00:00Z")
    assert "18 windows older than max_catchup skipped" in output.splitlines()[0]
    assert (
        "  [2026-01-01T00:00:00Z, 2026-01-01T01:30:00Z)  18 windows  (skip: older than max_catchup)"
        in output.splitlines()
    )


def test_status_fits_80_columns_with_lag_and_next_due(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    from tierflow import _cli

    screen = io.StringIO()
    monkeypatch.setattr(_cli, "out", Console(file=screen, width=80, force_terminal=True))
    # 2026-01-01T02:13:00Z + 30s: the job starts at midnight, every 5m, so its watermark is the
    # start (nothing ran): lag 2h13m; windows are pending, so it next has work now.
    code, output = invoke("status", "-c", config, "--now", "2026-01-01T02:13:30Z")
    assert code == 0, output
    text = _plain(screen.getvalue())
    assert max(map(len, text.splitlines())) <= 80, text
    row = next(line.strip() for line in text.splitlines() if "sensor_5m" in line)
    assert row.split() == ["sensor_5m", "-", "2h13m", "-", "0", "0", "26", "0", "0", "now"]

    code, output = invoke("status", "-c", config, "--now", "2025-12-31T23:00:00Z", "--json")
    (job,) = json.loads(output)["jobs"]
    # Before the start: nothing pending, the first window [00:00, 00:05) is due at 00:05.
    assert job["next_due"] == "2026-01-01T00:05:00Z"
    assert job["pending_windows"] == 0


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_busy_status_row_fits_80_columns_unbroken() -> None:
    import io

    from rich.console import Console

    from tierflow._cli_report import status_table

    at = datetime(2026, 3, 4, 12, 0, 30, tzinfo=UTC)
    row = {
        "job": "sensor_temp_5m",
        "watermark": "2026-03-02T09:47:00Z",
        "lag_seconds": 2 * 86400 + 2 * 3600 + 13 * 60 + 30,
        "last_status": "succeeded",
        "failed_windows": 1234,
        "parked_windows": 12,
        "pending_windows": 9999,
        "expiry_risk": True,
        "windows_at_risk": 120,
        "windows_lost": 3,
        "rechecked_windows": 345,
        "next_due": "2026-03-04T12:04:30Z",
    }
    screen = io.StringIO()
    Console(file=screen, width=80, force_terminal=True).print(status_table([row], at))
    text = _plain(screen.getvalue())
    assert max(map(len, text.splitlines())) <= 80, text
    line = next(line.strip() for line in text.splitlines() if "sensor_temp_5m" in line)
    assert line.split() == [
        "sensor_temp_5m", "03-02", "09:47", "2d2h", "succeeded", "1234", "12", "9999",
        "120", "(3)", "345", "in", "4m",
    ]  # fmt: skip


def test_a_redefined_job_is_marked_in_the_status_table_within_80_columns() -> None:
    import io

    from rich.console import Console

    from tierflow._cli_report import status_table

    at = datetime(2026, 3, 4, 12, 0, 30, tzinfo=UTC)
    row = {
        "job": "sensor_temp_5m",
        "watermark": "2026-03-02T09:47:00Z",
        "lag_seconds": 60,
        "last_status": "succeeded",
        "failed_windows": 0,
        "parked_windows": 0,
        "pending_windows": 1,
        "expiry_risk": False,
        "windows_at_risk": 0,
        "windows_lost": 0,
        "rechecked_windows": 0,
        "next_due": "2026-03-04T12:00:30Z",
    }
    changed = {"state": "changed", "digest": "0" * 16, "changes": [{"key": "dest"}]}
    same = {"state": "same", "digest": "0" * 16, "changes": []}
    rows = [{**row, "definition": changed}, {**row, "job": "other", "definition": same}]
    screen = io.StringIO()
    Console(file=screen, width=80, force_terminal=True).print(status_table(rows, at))
    text = _plain(screen.getvalue())
    assert max(map(len, text.splitlines())) <= 80, text
    names = [line.split()[0] for line in text.splitlines() if "03-02" in line]
    assert names == ["sensor_temp_5m!", "other"]
    assert "job!: redefined (see below)" in " ".join(text.split())


EXTRAS = """
[connections.cloud]
kind = "influxdb2"
url = "http://127.0.0.1:9"
org = "acme"
token = {{ env = "CLOUD_TOKEN" }}

[tiers.cloud_raw]
connection = "cloud"
bucket = "raw"

[tiers.cold]
archive = "{archive}"
"""


def with_extras(config: Path, archive: str) -> Path:
    text = config.read_text(encoding="utf-8") + EXTRAS.format(archive=archive)
    config.write_text(text, encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("module", "archive", "expected"),
    [
        ("s3fs", "s3://bucket/cold", "tier cold: an s3:// archive needs s3fs, "),
    ],
)
def test_validate_refuses_a_config_whose_extra_is_not_installed(
    config: Path, monkeypatch: pytest.MonkeyPatch, module: str, archive: str, expected: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an install without the extra has
    code, output = invoke("validate", "-c", with_extras(config, archive))
    assert code == 2, output
    extra = "influxdb2" if module == "influxdb_client" else "archive-s3"
    assert f"{expected}not installed: pip install 'tierflow[{extra}]'" in output
    assert "Traceback" not in output


def test_archive_query_without_duckdb_names_the_extra(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    path = with_extras(config, str(tmp_path / "cold"))
    code, output = invoke("archive", "query", "cold", "select 1", "-c", path)
    assert code == 1
    assert "pip install 'tierflow[archive-query]'" in output


def test_a_start_in_the_future_is_a_warning(config: Path) -> None:
    text = config.read_text(encoding="utf-8").replace(
        "2026-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
    )
    config.write_text(text, encoding="utf-8")
    code, output = invoke("validate", "-c", config)
    assert code == 0, output
    assert (
        "warning: job sensor_5m: start 2999-01-01T00:00:00Z is in the future: no window of it "
        "runs before then"
    ) in output


@pytest.mark.parametrize(
    ("wrong", "right"),
    [("agregates", "aggregates"), ("measurement", "measurements"), ("every_", "every")],
)
def test_a_mistyped_key_gets_did_you_mean(config: Path, wrong: str, right: str) -> None:
    text = config.read_text(encoding="utf-8").replace(f"\n{right} =", f"\n{wrong} =")
    config.write_text(text, encoding="utf-8")
    code, output = invoke("validate", "-c", config)
    assert code == 2
    assert f"[jobs.sensor_5m] {wrong}" in output
    assert f"unknown key; did you mean '{right}'?" in output


def test_a_mistyped_table_gets_did_you_mean(config: Path) -> None:
    config.write_text(config.read_text(encoding="utf-8") + "\n[schedular]\n", encoding="utf-8")
    code, output = invoke("validate", "-c", config)
    assert code == 2
    assert (
        "top level schedular: unknown top-level table or key; did you mean 'scheduler'?" in output
    )


BROKEN = [
    (["validate", "-c", "{bad_toml}"], 2),
    (["validate", "--online", "-c", "{bad_state}"], 1),
    (["plan", "-c", "{c}", "--now", "yesterday"], 2),
    (["plan", "nope", "-c", "{c}"], 2),
    (["run-once", "-c", "{bad_state}"], 1),
    (["run-once", "-c", "{c}", "--now", "2026-01-01T00:10:00"], 2),
    (["run", "-c", "{bad_toml}"], 2),
    (["run", "-c", "{bad_state}"], 1),
    (["backfill", "sensor_5m", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z",
      "-c", "{c}"], 2),
    (["backfill", "nope", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
      "-c", "{c}"], 2),
    (["retry", "sensor_5m", "-c", "{c}"], 2),
    (["retry", "sensor_5m", "--from", "x", "--to", "y", "-c", "{c}"], 2),
    (["status", "-c", "{bad_state}"], 1),
    (["status", "nope", "-c", "{c}"], 2),
    (["history", "nope", "-c", "{c}"], 2),
    (["history", "sensor_5m", "-c", "{bad_state}"], 1),
    (["archive", "verify", "hot", "-c", "{c}"], 2),
    (["archive", "query", "cold", "selec nothing", "-c", "{cold}"], 1),
    (["restore", "hot", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
      "--into", "warm", "-c", "{c}"], 2),
    (["restore", "cold", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
      "--into", "cold", "-c", "{cold}"], 2),
    (["apply", "-c", "{bad_toml}"], 2),
    (["--log-level", "loud", "status", "-c", "{c}"], 2),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code"), BROKEN, ids=[" ".join(a[:2]) for a, _ in BROKEN])
def test_every_command_with_a_broken_input_is_an_error_not_a_traceback(
    config: Path, tmp_path: Path, args: list[str], code: int
) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[jobs\n", encoding="utf-8")
    bad_state = tmp_path / "bad-state.toml"
    # A state store that cannot open: its directory is a file.
    (tmp_path / "file").write_text("", encoding="utf-8")
    bad_state.write_text(
        config.read_text(encoding="utf-8").replace(
            str(tmp_path / "state.db"), str(tmp_path / "file" / "s.db")
        ),
        encoding="utf-8",
    )
    cold = tmp_path / "cold.toml"
    cold.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    with_extras(cold, str(tmp_path / "cold"))
    (tmp_path / "cold").mkdir()
    names = {"{c}": config, "{bad_toml}": bad_toml, "{bad_state}": bad_state, "{cold}": cold}
    result = CliRunner().invoke(app, [str(names.get(a, a)) for a in args])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in result.output
    assert "error" in result.output.lower()
    assert "internal error" not in result.output


@pytest.mark.parametrize("command", ["run-once", "run", "status"])
def test_an_unexpected_exception_is_one_error_line_not_a_traceback(
    config: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # A bug (here: opening the state store raises what no code maps) still exits 1 with a
    # message; the traceback goes to the log, at debug level only.
    def broken(self: Tierflow) -> StateStore:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(Tierflow, "store", property(broken))
    result = CliRunner().invoke(app, ["--log-level", "debug", command, "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.splitlines()
    assert "error: internal error: RuntimeError: cannot schedule new futures after shutdown" in (
        lines
    )
    assert not any(line.startswith("Traceback") for line in lines), result.output
    (logged,) = [json.loads(line) for line in lines if '"internal_error"' in line]
    assert logged["level"] == "debug"
    assert "Traceback" in logged["exception"]


COMMANDS = [
    [], ["validate"], ["plan"], ["run-once"], ["run"], ["backfill"], ["retry"], ["status"],
    ["history"], ["archive"], ["archive", "verify"], ["archive", "query"], ["restore"], ["apply"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "tierflow" for c in COMMANDS])
def test_every_help_is_whole_and_every_command_is_in_the_readme(command: list[str]) -> None:
    code, output = invoke(*command, "--help")
    assert code == 0
    assert "<bool>" not in output  # a flag takes no value
    if command:
        readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
        assert f"| `tierflow {' '.join(command)}" in readme
    # Text in brackets is text, not markup to swallow.
    if command == ["run"]:
        assert "[scheduler] grace" in output
    if command == ["archive", "query"]:
        assert "tierflow[archive-query]" in output


def test_status_lists_the_workers_live_gone_and_stopped_within_80_columns(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import io

    from rich.console import Console

    from tierflow import _cli
    from tierflow._state import Holder, SqliteStateStore, Worker

    now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    live = Worker(
        Holder("alpha", 101, "b:1"), "0.1.0", now - timedelta(hours=3), now, ("sensor_5m",)
    )
    gone = Worker(
        Holder("beta", 202, "b:2"), "0.1.0", now - timedelta(hours=2), now - timedelta(minutes=2)
    )
    stopped = Worker(
        Holder("gamma", 303, "b:3"), "0.0.9", now - timedelta(hours=1), now - timedelta(minutes=5),
        stopped_at=now - timedelta(minutes=5),
    )  # fmt: skip
    old = Worker(
        Holder("delta", 404, "b:4"), "0.0.9", now - timedelta(days=1), now - timedelta(hours=2)
    )

    async def record() -> None:
        async with SqliteStateStore(tmp_path / "state.db") as store:
            for worker in (live, gone, stopped, old):
                await store.beat(worker)
            await store.ensure_job("sensor_5m", now - timedelta(hours=2))
            start = datetime(2026, 1, 1, tzinfo=UTC)
            # alpha holds one window, beta (gone) another.
            for holder, window in [(live.holder, 0), (gone.holder, 1)]:
                span = Window(
                    start + window * timedelta(minutes=5),
                    start + (window + 1) * timedelta(minutes=5),
                )
                assert await store.claim(
                    "sensor_5m", [span], run_id=f"r{window}", started_at=now,
                    lease_expires_at=now + timedelta(minutes=1), holder=holder,
                )  # fmt: skip

    asyncio.run(record())
    code, output = invoke("status", "-c", config, "--now", "2026-01-01T02:00:10Z", "--json")
    assert code == 0, output
    workers = json.loads(output)["workers"]
    assert [(w["host"], w["pid"], w["state"], w["running_windows"]) for w in workers] == [
        ("alpha", 101, "live", 1),
        ("beta", 202, "gone", 1),
        ("gamma", 303, "stopped", 0),
    ]  # oldest started first; delta, silent for two hours, is not shown
    assert workers[0] == {
        "id": "alpha:101:b:1",
        "host": "alpha",
        "pid": 101,
        "version": "0.1.0",
        "state": "live",
        "started_at": "2025-12-31T23:00:00Z",
        "last_seen": "2026-01-01T02:00:00Z",
        "stopped_at": None,
        "jobs": ["sensor_5m"],
        "running_windows": 1,
    }
    assert workers[2]["stopped_at"] == "2026-01-01T01:55:00Z"

    screen = io.StringIO()
    monkeypatch.setattr(_cli, "out", Console(file=screen, width=80, force_terminal=True))
    code, output = invoke("status", "-c", config, "--now", "2026-01-01T02:00:10Z")
    assert code == 0, output
    text = _plain(screen.getvalue())
    assert max(map(len, text.splitlines())) <= 80, text
    rows = [line.split() for line in text.splitlines()]
    assert [row for row in rows if row and row[0] in {"alpha", "beta", "gamma", "delta"}] == [
        ["alpha", "101", "0.1.0", "live", "2025-12-31", "10s", "ago", "1"],
        ["beta", "202", "0.1.0", "gone", "01-01", "00:00", "2m10s", "ago", "1"],
        ["gamma", "303", "0.0.9", "stopped", "01-01", "01:00", "5m10s", "ago", "0"],
    ]


def test_status_says_when_no_worker_beat(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from tierflow import _cli

    screen = io.StringIO()
    monkeypatch.setattr(_cli, "out", Console(file=screen, width=200, force_terminal=True))
    code, output = invoke("status", "-c", config, "--now", "2026-01-01T02:00:00Z")
    assert code == 0, output
    assert "workers: none seen in the last hour" in _plain(screen.getvalue())
    code, output = invoke("status", "-c", config, "--now", "2026-01-01T02:00:00Z", "--json")
    assert json.loads(output)["workers"] == []
