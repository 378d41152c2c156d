"""Credentials in URLs are refused without being echoed; relative state paths are anchored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_config import document, error_of, line_about, load_text
from tierflow._errors import ConfigError, StateError
from tierflow._secrets import EnvSecret
from tierflow._state import open_state_store
from tierflow._url_checks import redact_url

CANARY = "Cnry7-pw-never-print"
V2 = {
    "kind": '"influxdb2"',
    "org": '"acme"',
    "token": '{ env = "INFLUX_TOKEN" }',
    "username": None,
    "password": None,
}


@pytest.fixture(autouse=True)
def _no_state_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_STATE", raising=False)


def refusal(tmp_path: Path, text: str, where: str) -> str:
    path, message = error_of(tmp_path, text)
    assert CANARY not in message
    line = line_about(message, where)
    assert line.strip().startswith(f"{path}: {where}")
    return line


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{CANARY}@influx.example:8086",
        f"https://admin:{CANARY}@influx.example",
        f"http://admin:a/{CANARY}@influx.example:8086",  # '/' in the password
        f"http://admin:{CANARY}?x@influx.example",  # '?' in the password
        f"http://{CANARY}@influx.example:8086",
        f"http://influx.example:8086?u=admin&p={CANARY}",
        f"http://influx.example:8086/#{CANARY}",
        f"ftp://admin:{CANARY}@influx.example",  # refused by the pattern too, shown redacted
    ],
)
@pytest.mark.parametrize("kind", ["influxdb1", "influxdb2"])
def test_credentials_in_a_connection_url_are_refused_unseen(
    tmp_path: Path, url: str, kind: str
) -> None:
    body = {"url": f'"{url}"', **(V2 if kind == "influxdb2" else {})}
    line = refusal(tmp_path, document(connection=body), "[connections.plant] url:")
    if kind == "influxdb1":
        assert 'username = "…" and password = { env = "…" }' in line
    else:
        assert 'token = { env = "…" }' in line


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAEXAMPLE:{CANARY}@bucket/prefix",
        f"s3://AKIAEXAMPLE:wJal/{CANARY}/x@bucket/prefix",  # AWS secrets hold '/'
        f"s3://AKIAEXAMPLE:{CANARY}/prefix",
        f"gs://key:{CANARY}@bucket",
        f"file://admin:{CANARY}@host/srv/archive",
        f"file://admin:x/{CANARY}@host/srv/archive",
    ],
)
def test_credentials_in_an_archive_url_are_refused_unseen(tmp_path: Path, url: str) -> None:
    text = document(extra=f'\n[tiers.cold]\narchive = "{url}"\n')
    line = refusal(tmp_path, text, "[tiers.cold] archive:")
    if url.startswith("s3"):
        assert "AWS_SECRET_ACCESS_KEY" in line


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://tierflow:{CANARY}@db.example/tierflow",
        f"postgresql://tierflow:a/{CANARY}@db.example/tierflow",
        f"postgresql://db.example/tierflow?user=tierflow&password={CANARY}",
    ],
)
def test_a_password_in_the_state_url_is_refused_unseen(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = document().replace('url = "sqlite:///state.db"', f'url = "{url}"')
    assert "PGPASSWORD" in refusal(tmp_path, text, "[state] url:")
    monkeypatch.setenv("TIERFLOW_STATE", url)
    line = refusal(tmp_path, document(), "[state] url:")
    assert "from TIERFLOW_STATE" in line


def test_the_state_password_comes_from_a_secret_source_and_survives_tierflow_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://tierflow@db.example/tierflow"
    text = document().replace(
        'url = "sqlite:///state.db"', f'url = "{url}"\npassword = {{ env = "PG_PW" }}'
    )
    assert load_text(tmp_path, text).state.password == EnvSecret(env="PG_PW")
    assert load_text(tmp_path, text).state.url == url
    # TIERFLOW_STATE moves the state; the file's password still applies.
    monkeypatch.setenv("TIERFLOW_STATE", "postgresql://tierflow@other.example/tierflow")
    state = load_text(tmp_path, text).state
    assert (state.url, state.password) == (
        "postgresql://tierflow@other.example/tierflow",
        EnvSecret(env="PG_PW"),
    )


def test_a_literal_state_password_loads_with_a_warning_and_never_shows(tmp_path: Path) -> None:
    text = document().replace(
        'url = "sqlite:///state.db"',
        f'url = "postgresql://tierflow@db.example/tierflow"\npassword = "{CANARY}"',
    )
    with pytest.warns(UserWarning, match=r"\[state\] password is written into the config"):
        config = load_text(tmp_path, text)
    assert CANARY not in repr(config.state)


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("archive", "file:///srv/archive@2026"),
        ("archive", "archive/a:b@c"),
        ("archive", "s3://bucket/prefix"),
        ("state", "sqlite:////srv/tier:flow@x/state.db"),
        ("state", "postgresql://tierflow@db.example/tierflow"),
    ],
)
def test_urls_without_credentials_load(tmp_path: Path, key: str, url: str) -> None:
    if key == "archive":
        config = load_text(tmp_path, document(extra=f'\n[tiers.cold]\narchive = "{url}"\n'))
        assert config.tiers["cold"].archive == url
    else:
        text = document().replace('url = "sqlite:///state.db"', f'url = "{url}"')
        assert load_text(tmp_path, text).state.url == url


def test_redact_url() -> None:
    assert redact_url("http://a:b/c@host:1/p") == "http://<redacted>@host:1/p"
    assert redact_url("http://host:1/?p=x#y") == "http://host:1/?<redacted>"
    assert redact_url("plain/path@x") == "plain/path@x"
    assert redact_url("http://host:8086") == "http://host:8086"


# ---------------------------------------------------------------------------------------------
# Where the state lives


def test_a_relative_state_path_is_beside_the_config_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    text = document().replace("sqlite:///state.db", "sqlite:///var/state.db")
    config = load_text(tmp_path / "etc", text)
    assert config.state.url == f"sqlite:///{tmp_path / 'etc' / 'var' / 'state.db'}"
    # A relative config path is anchored the same way.
    monkeypatch.chdir(tmp_path)
    from tierflow._config import load_config

    assert load_config(Path("etc/tierflow.toml")).state.url == config.state.url


def test_a_relative_tierflow_state_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIERFLOW_STATE", "sqlite:///here.db")
    assert load_text(tmp_path / "etc", document()).state.url == f"sqlite:///{tmp_path}/here.db"


def test_a_state_left_in_the_working_directory_is_pointed_at_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Earlier versions kept a relative state in the working directory; starting a new one
    beside the config would run every window again."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "cron").mkdir()
    (tmp_path / "cron" / "state.db").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "cron")
    _, message = error_of(tmp_path / "etc", document())
    line = line_about(message, "[state] url")
    assert f"{tmp_path / 'cron' / 'state.db'} exists" in line
    assert f"{tmp_path / 'etc' / 'state.db'} does not exist" in line
    # Once it is moved, or from the config's own directory, all is well.
    monkeypatch.chdir(tmp_path / "etc")
    assert load_text(tmp_path / "etc", document()).state.url.endswith("/etc/state.db")


def test_a_state_file_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'state.db'}"
    with pytest.raises(ConfigError, match=f"directory {tmp_path / 'missing'} does not exist"):
        open_state_store(url)
    assert not (tmp_path / "missing").exists()


def test_a_state_path_that_is_a_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=f"state store {tmp_path}: unable to open"):
        open_state_store(f"sqlite:///{tmp_path}")
