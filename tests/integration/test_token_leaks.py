"""Tokens never leak: every command of the real `tierflow` process, with and without `--json`,
at debug log level, in a succeeding and in failing runs against a 2.x server (the recording
stand-in, `tests/influx2_standin.py`), prints no token, and the state file holds none. The
stand-in even echoes the token back in an error message, as a misbehaving proxy might."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.influx2_standin import StandIn, annotated_csv, error_answer, running_in_thread
from tests.integration.conftest import toml_value
from tests.integration.test_cli import TIERFLOW

TOKEN = "tkn-Zq8rV1-do-not-print-me"
ROTATED = "tkn-Zq8rV2-nor-this-one"
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = START + timedelta(minutes=15)
# Every query gets this answer, `validate --online`'s lookup of the source's fields included:
# a float field `temp`, what the job aggregates.
CSV = annotated_csv(
    [
        (
            ["_time", "_value", "_field", "_measurement"],
            ["dateTime:RFC3339", "double", "string", "string"],
            [["2026-11-01T00:00:00Z", "1.5", "temp", "sensor"]],
        )
    ]
)


def config(tmp_path: Path, url: str) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    path = tmp_path / "tierflow.toml"
    path.write_text(
        "\n".join(
            [
                "[state]",
                f"url = {toml_value('sqlite:///' + str(tmp_path / 'state.db'))}",
                "[connections.cloud]",
                'kind = "influxdb2"',
                f"url = {toml_value(url)}",
                'org = "acme"',
                f"token = {{ file = {toml_value(str(token_file))} }}",
                "[connections.cloud.retry]",
                "attempts = 2",
                'initial = "10ms"',
                'max = "20ms"',
                "[tiers.hot]",
                'connection = "cloud"',
                'bucket = "hot"',
                "[tiers.warm]",
                'connection = "cloud"',
                'bucket = "warm"',
                "[jobs.down]",
                'kind = "downsample"',
                'source = "hot"',
                'dest = "warm"',
                'measurements = ["sensor"]',
                'every = "5m"',
                f"start = {toml_value(START)}",
                'aggregates = { temp = ["mean"] }',
                "replace = true",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `tierflow` at debug level, with no TIERFLOW_* variable but those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return subprocess.run(
        [str(TIERFLOW), "--log-level", "debug", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean | (env or {}),
        cwd=cwd,
        check=False,
    )


COMMANDS: list[list[str]] = [
    ["validate", "--online"],
    ["plan", "--now", NOW.isoformat()],
    ["run-once", "--now", NOW.isoformat()],
    ["status", "--now", NOW.isoformat()],
    ["history", "down"],
]


def everything_printed(config_path: Path, tmp_path: Path) -> tuple[str, list[int]]:
    printed, codes = [], []
    for command in COMMANDS:
        for extra in ([], ["--json"]):
            result = run(*command, "-c", config_path, *extra, cwd=tmp_path)
            printed += [result.stdout, result.stderr]
            codes.append(result.returncode)
    return "\n".join(printed), codes


@pytest.mark.parametrize("outcome", ["succeeds", "server_echoes_token", "token_refused"])
def test_no_command_prints_a_token(tmp_path: Path, outcome: str) -> None:
    standin = StandIn(tokens={TOKEN}, default_csv=CSV)
    if outcome == "server_echoes_token":
        standin.script("/api/v2/query", *[error_answer(500, f"bad auth header Token {TOKEN}")] * 20)
        standin.script("/api/v2/delete", *[error_answer(400, f"echo {TOKEN}")] * 20)
    if outcome == "token_refused":
        standin.tokens = {ROTATED}  # the file still holds the old token

    with running_in_thread(standin):
        path = config(tmp_path, standin.url)
        printed, codes = everything_printed(path, tmp_path)

    assert TOKEN not in printed
    assert ROTATED not in printed
    state = (tmp_path / "state.db").read_bytes() if (tmp_path / "state.db").exists() else b""
    assert TOKEN.encode() not in state
    sent = [r.headers.get("Authorization") for r in standin.requests if r.path != "/health"]
    assert f"Token {TOKEN}" in sent  # the token did travel, where it belongs
    if outcome == "succeeds":
        assert set(codes) == {0}
        assert "/api/v2/delete" in standin.paths()  # replace = true deleted first
    else:
        assert 1 in codes or 2 in codes
        assert "connection cloud" in printed
    if outcome == "server_echoes_token":
        assert "<redacted>" in printed
