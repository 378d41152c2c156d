"""load_config / parse_config: TOML in, frozen validated models out, or one ConfigError for all."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from tierflow._config import (
    Config,
    DownsampleJob,
    InfluxDB1Connection,
    load_config,
    parse_config,
)
from tierflow._errors import ConfigError, TierflowError
from tierflow._secrets import EnvSecret, LiteralSecret
from tierflow._windows import CronSchedule, IntervalSchedule

SECRET = "hunter2-s3cret-value"

STATE = """
[state]
url = "sqlite:///state.db"
"""

CONNECTION = {
    "kind": '"influxdb1"',
    "url": '"http://influx.example:8086"',
    "username": '"tierflow"',
    "password": '{ env = "INFLUX_PASSWORD" }',
    "timeout": '"30s"',
}

HOT = {"connection": '"plant"', "bucket": '"plant/autogen"', "retention": '"7d"'}
WARM = {"connection": '"plant"', "bucket": '"plant/warm"', "retention": '"400d"'}

JOB = {
    "kind": '"downsample"',
    "source": '"hot"',
    "dest": '"warm"',
    "measurements": '["sensor"]',
    "every": '"5m"',
    "offset": '"30s"',
    "start": "2026-01-01T01:00:00+01:00",
    "aggregates": '{ value = ["mean", "max"], other = ["count"] }',
    "tags": '{ site = "north" }',
}


def table(header: str, body: dict[str, str], **changes: str | None) -> str:
    """A TOML table from `body`, with keys replaced, added, or (given None) removed."""
    merged = {**body, **changes}
    lines = [f"{key} = {value}" for key, value in merged.items() if value is not None]
    return f"\n[{header}]\n" + "\n".join(lines) + "\n"


def document(
    *,
    connection: dict[str, str | None] | None = None,
    hot: dict[str, str | None] | None = None,
    warm: dict[str, str | None] | None = None,
    job: dict[str, str | None] | None = None,
    extra: str = "",
) -> str:
    return (
        STATE
        + table("connections.plant", CONNECTION, **(connection or {}))
        + table("tiers.hot", HOT, **(hot or {}))
        + table("tiers.warm", WARM, **(warm or {}))
        + table("jobs.sensor_5m", JOB, **(job or {}))
        + extra
    )


@pytest.fixture(autouse=True)
def _no_state_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_STATE", raising=False)


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "tierflow.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "tierflow.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return path, str(caught.value)


def line_about(message: str, where: str) -> str:
    """The one problem line naming `where` (e.g. `[jobs.sensor_5m] every`)."""
    lines = [line for line in message.splitlines() if where in line]
    assert len(lines) == 1, f"expected one line with {where!r} in:\n{message}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# A valid config


def test_full_config_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, document())
    assert config.path == tmp_path / "tierflow.toml"
    assert config.state.url == f"sqlite:///{tmp_path / 'state.db'}"  # beside the config

    plant = config.connections["plant"]
    assert plant.kind == "influxdb1"
    assert plant.url == "http://influx.example:8086"
    assert plant.username == "tierflow"
    assert plant.password == EnvSecret(env="INFLUX_PASSWORD")
    assert plant.timeout == timedelta(seconds=30)

    hot, warm = config.tiers["hot"], config.tiers["warm"]
    assert (hot.database, hot.retention_policy) == ("plant", "autogen")
    assert (warm.database, warm.retention_policy) == ("plant", "warm")
    assert hot.retention == timedelta(days=7)
    assert warm.retention == timedelta(days=400)
    assert config.connection_of("warm") is plant

    job = config.jobs["sensor_5m"]
    assert (job.kind, job.source, job.dest) == ("downsample", "hot", "warm")
    assert job.measurements == ("sensor",)
    assert job.every == timedelta(minutes=5)
    assert job.cron is None
    assert job.offset == timedelta(seconds=30)
    # 01:00 at UTC+1 is midnight UTC, and the value is held in UTC.
    assert job.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert job.start.utcoffset() == timedelta(0)
    assert isinstance(job, DownsampleJob)
    assert job.aggregates == {"value": ("mean", "max"), "other": ("count",)}
    assert job.tags == {"site": "north"}
    assert job.schedule == IntervalSchedule(timedelta(minutes=5))


def test_defaults(tmp_path: Path) -> None:
    text = document(connection={"timeout": None, "password": None}, job={"offset": None})
    config = load_text(tmp_path, text.replace(STATE, ""))
    assert config.state.url == f"sqlite:///{tmp_path / 'tierflow-state.db'}"
    plant = config.connections["plant"]
    assert isinstance(plant, InfluxDB1Connection)
    assert plant.timeout == timedelta(seconds=15)
    assert plant.password is None
    assert config.jobs["sensor_5m"].offset == timedelta(0)


def test_bucket_without_policy_uses_the_default_policy(tmp_path: Path) -> None:
    config = load_text(tmp_path, document(warm={"bucket": '"plant"'}))
    assert config.tiers["warm"].database == "plant"
    assert config.tiers["warm"].retention_policy is None


def test_cron_job_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, document(job={"every": None, "cron": '"30 * * * *"'}))
    job = config.jobs["sensor_5m"]
    assert job.every is None
    assert job.schedule == CronSchedule("30 * * * *")


def test_same_bucket_is_allowed_with_into(tmp_path: Path) -> None:
    text = document(warm={"bucket": '"plant/autogen"'}, job={"into": '"sensor_5m"'})
    assert load_text(tmp_path, text).jobs["sensor_5m"].into == "sensor_5m"


def test_models_are_frozen(tmp_path: Path) -> None:
    job = load_text(tmp_path, document()).jobs["sensor_5m"]
    with pytest.raises(ValidationError):
        job.every = timedelta(hours=1)  # type: ignore[misc]


def test_parse_config_takes_a_parsed_document() -> None:
    raw = {
        "connections": {"plant": {"kind": "influxdb1", "url": "https://influx:8086"}},
        "tiers": {"hot": {"connection": "plant", "bucket": "plant/autogen"}},
    }
    config = parse_config(raw, Path("inline.toml"))
    assert config.tiers["hot"].connection == "plant"
    assert config.jobs == {}


# ---------------------------------------------------------------------------------------------
# Errors: each names the file, the table, the key and the value


def test_unknown_key(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"colour": '"red"'}))
    assert line_about(message, "[jobs.sensor_5m] colour") == (
        f'  {path}: [jobs.sensor_5m] colour = "red": unknown key'
    )


def test_unknown_key_in_a_connection(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(connection={"retries": "3"}))
    assert line_about(message, "[connections.plant] retries") == (
        f"  {path}: [connections.plant] retries = 3: unknown key; did you mean 'retry'?"
    )


def test_unknown_top_level_table(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(extra='\n[archive]\nurl = "s3://x"\n'))
    assert line_about(message, "top level archive") == (
        f"  {path}: top level archive: unknown top-level table or key"
    )


def test_unknown_aggregate(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"aggregates": '{ value = ["mean", "avg"] }'}))
    line = line_about(message, "[jobs.sensor_5m] aggregates")
    assert str(path) in line
    assert "'avg'" in line
    assert "unknown aggregate" in line
    assert "'value'" in line  # the field it was asked for


def test_unknown_tier(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"dest": '"cold"'}))
    assert line_about(message, "[jobs.sensor_5m] dest") == (
        f'  {path}: [jobs.sensor_5m] dest = "cold": no such tier; defined: hot, warm'
    )


def test_unknown_connection(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(hot={"connection": '"archive"'}))
    assert line_about(message, "[tiers.hot] connection") == (
        f'  {path}: [tiers.hot] connection = "archive": no such connection; defined: plant'
    )


def test_unknown_connection_kind(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(connection={"kind": '"influxdb4"'}))
    line = line_about(message, "[connections.plant] kind")
    assert str(path) in line
    assert '"influxdb4"' in line
    assert "influxdb1" in line  # what would have been accepted


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("every", '"5x"', "invalid duration"),
        ("every", '"1.5h"', "invalid duration"),
        ("every", '"0s"', "greater than zero"),
        ("every", '"500ms"', "whole number of seconds"),
        ("offset", '"-30s"', "invalid duration"),
        ("every", "300", "duration string"),
    ],
)
def test_bad_duration(tmp_path: Path, key: str, value: str, reason: str) -> None:
    path, message = error_of(tmp_path, document(job={key: value}))
    line = line_about(message, f"[jobs.sensor_5m] {key}")
    assert line.startswith(f"  {path}: [jobs.sensor_5m] {key} = {value}: ")
    assert reason in line


def test_bad_connection_timeout(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(connection={"timeout": '"soon"'}))
    line = line_about(message, "[connections.plant] timeout")
    assert line.startswith(f'  {path}: [connections.plant] timeout = "soon": invalid duration')


def test_every_and_cron_both_set(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"cron": '"*/5 * * * *"'}))
    line = line_about(message, "[jobs.sensor_5m]")
    assert str(path) in line
    assert "exactly one of 'every' and 'cron'" in line


def test_neither_every_nor_cron(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"every": None}))
    line = line_about(message, "[jobs.sensor_5m]")
    assert str(path) in line
    assert "exactly one of 'every' and 'cron'" in line


def test_naive_start(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"start": "2026-01-01T00:00:00"}))
    line = line_about(message, "[jobs.sensor_5m] start")
    assert line.startswith(f"  {path}: [jobs.sensor_5m] start = 2026-01-01T00:00:00: ")
    assert "timezone" in line


def test_unknown_job_kind(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"kind": '"upsample"'}))
    assert line_about(message, "[jobs.sensor_5m] kind") == (
        f'  {path}: [jobs.sensor_5m] kind = "upsample": unknown kind; '
        "expected one of: archive, downsample, query"
    )


def test_missing_job_kind(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(job={"kind": None}))
    line = line_about(message, "[jobs.sensor_5m] kind")
    assert str(path) in line
    assert "missing" in line


@pytest.mark.parametrize(
    ("section", "changes", "where"),
    [
        ("job", {"measurements": None}, "[jobs.sensor_5m] measurements"),
        ("job", {"start": None}, "[jobs.sensor_5m] start"),
        ("job", {"aggregates": None}, "[jobs.sensor_5m] aggregates"),
        ("hot", {"bucket": None}, "[tiers.hot] bucket"),
        ("connection", {"url": None}, "[connections.plant] url"),
    ],
)
def test_missing_required_key(
    tmp_path: Path, section: str, changes: dict[str, str | None], where: str
) -> None:
    path, message = error_of(tmp_path, document(**{section: changes}))  # type: ignore[arg-type]
    assert line_about(message, where) == f"  {path}: {where}: required key is missing"


def test_invalid_toml(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document() + "\n[jobs.broken\n")
    assert message.startswith(f"{path}: not valid TOML")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "tierflow.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)


def test_config_error_is_a_tierflow_error(tmp_path: Path) -> None:
    with pytest.raises(TierflowError):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("cron", ["0 0 * *", "61 * * * *", "@hourly", "0 0 * * * *"])
def test_bad_cron_expression(tmp_path: Path, cron: str) -> None:
    path, message = error_of(tmp_path, document(job={"every": None, "cron": f'"{cron}"'}))
    line = line_about(message, "[jobs.sensor_5m] cron")
    assert line.startswith(f'  {path}: [jobs.sensor_5m] cron = "{cron}": ')
    assert "invalid cron expression" in line


def test_source_and_dest_in_the_same_bucket_need_into(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, document(warm={"bucket": '"plant/autogen"'}))
    line = line_about(message, "[jobs.sensor_5m] dest")
    assert line.startswith(f'  {path}: [jobs.sensor_5m] dest = "warm": ')
    assert "'into'" in line


def test_bad_table_name_is_quoted(tmp_path: Path) -> None:
    extra = '\n[tiers."cold storage"]\nconnection = "plant"\nbucket = "plant/cold"\n'
    path, message = error_of(tmp_path, document(extra=extra))
    line = line_about(message, '[tiers."cold storage"]')
    assert str(path) in line


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    second_job = table("jobs.other", JOB, every='"5x"', measurements=None)
    text = document(
        connection={"timeout": '"soon"'},
        hot={"connection": '"nope"'},
        job={"dest": '"cold"'},
        extra=second_job,
    )
    path, message = error_of(tmp_path, text)
    assert message.splitlines()[0] == f"{path}: 5 problem(s) in the config"
    line_about(message, '[connections.plant] timeout = "soon"')
    line_about(message, '[tiers.hot] connection = "nope"')
    line_about(message, '[jobs.sensor_5m] dest = "cold"')
    line_about(message, '[jobs.other] every = "5x"')
    line_about(message, "[jobs.other] measurements")


def test_a_bad_table_does_not_cascade(tmp_path: Path) -> None:
    # The connection is declared but invalid: the tiers using it must not also be reported.
    path, message = error_of(tmp_path, document(connection={"url": '"ftp://influx"'}))
    assert message.splitlines()[0] == f"{path}: 1 problem(s) in the config"
    line_about(message, "[connections.plant] url")


def test_field_error_and_cross_check_in_one_job_are_reported_together(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, document(job={"every": '"5x"', "dest": '"cold"'}))
    line_about(message, '[jobs.sensor_5m] every = "5x"')
    line_about(message, '[jobs.sensor_5m] dest = "cold"')


def test_out_of_range_duration_is_a_config_error(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, document(job={"every": '"1000000000d"'}))
    line_about(message, '[jobs.sensor_5m] every = "1000000000d"')


# ---------------------------------------------------------------------------------------------
# Secrets


def test_literal_password_warns_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text(document(connection={"password": f'"{SECRET}"'}), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"\[connections\.plant\] password") as caught:
        config = load_config(path)
    assert all(SECRET not in str(w.message) for w in caught)
    assert all(str(path) in str(w.message) for w in caught)
    plant = config.connections["plant"]
    assert isinstance(plant, InfluxDB1Connection)
    password = plant.password
    assert isinstance(password, LiteralSecret)
    assert password.resolve() == SECRET
    assert SECRET not in repr(config)


def test_env_password_does_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_text(tmp_path, document())


@pytest.mark.parametrize(
    "password",
    [
        f'"{SECRET}"',  # valid literal, the error is elsewhere in the table
        f'{{ value = "{SECRET}" }}',  # no kind can be inferred
        f'{{ kind = "literal", value = "{SECRET}", note = "x" }}',  # unknown key in the secret
        f'{{ kind = "vault", value = "{SECRET}" }}',  # unknown secret kind
    ],
)
def test_password_never_appears_in_errors(tmp_path: Path, password: str) -> None:
    text = document(connection={"password": password, "timeout": '"soon"'})
    _, message = error_of(tmp_path, text)
    assert SECRET not in message
    line_about(message, '[connections.plant] timeout = "soon"')


def test_bad_password_is_reported_redacted(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, document(connection={"password": f'{{ v = "{SECRET}" }}'}))
    line = line_about(message, "[connections.plant] password")
    assert SECRET not in line
    assert "<redacted>" in line


# ---------------------------------------------------------------------------------------------
# Environment


def test_tierflow_state_overrides_the_state_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_STATE", "memory://")
    assert load_text(tmp_path, document()).state.url == "memory://"


def test_tierflow_state_overrides_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_STATE", "sqlite:////var/lib/tierflow/state.db")
    config = load_text(tmp_path, document().replace(STATE, ""))
    assert config.state.url == "sqlite:////var/lib/tierflow/state.db"


def test_without_tierflow_state_the_file_wins(tmp_path: Path) -> None:
    assert load_text(tmp_path, document()).state.url == f"sqlite:///{tmp_path / 'state.db'}"


# ---------------------------------------------------------------------------------------------
# [state] keep_history


def test_keep_history_defaults_to_ninety_days(tmp_path: Path) -> None:
    assert load_text(tmp_path, document()).state.keep_history == timedelta(days=90)


def test_keep_history_is_a_duration(tmp_path: Path) -> None:
    text = document().replace(STATE, STATE + 'keep_history = "30d"\n')
    assert load_text(tmp_path, text).state.keep_history == timedelta(days=30)


@pytest.mark.parametrize("value", ['"0s"', '"soon"', "90"])
def test_a_bad_keep_history_names_the_key(tmp_path: Path, value: str) -> None:
    text = document().replace(STATE, STATE + f"keep_history = {value}\n")
    _, message = error_of(tmp_path, text)
    line_about(message, f"[state] keep_history = {value}")
