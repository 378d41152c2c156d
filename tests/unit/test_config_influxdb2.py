"""Config for InfluxDB 2.x connections, query jobs, `replace` and tenants (orgs)."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from tierflow._config import (
    Config,
    DownsampleJob,
    InfluxDB2Connection,
    QueryJob,
    load_config,
)
from tierflow._errors import ConfigError
from tierflow._jobs import is_relay
from tierflow._secrets import AwsSecret, FileSecret, VaultSecret

TOKEN = "tok-very-secret-0042"

BASE = """
[connections.cloud]
kind = "influxdb2"
url = "https://influx.example:8086"
org = "acme"
token = {{ file = "/run/secrets/influx-token" }}
max_concurrency = 8
{connection_extra}

[connections.other]
kind = "influxdb2"
url = "https://influx.example:8086"
org = "{other_org}"
token = {{ env = "OTHER_TOKEN" }}

[connections.plant]
kind = "influxdb1"
url = "http://127.0.0.1:8086"

[tiers.hot]
connection = "cloud"
bucket = "hot"

[tiers.warm]
connection = "cloud"
bucket = "warm"

[tiers.foreign]
connection = "other"
bucket = "warm"

[tiers.plant_hot]
connection = "plant"
bucket = "plant/autogen"

[tiers.plant_warm]
connection = "plant"
bucket = "plant/warm"
"""


def write(
    tmp_path: Path, jobs: str, *, other_org: str = "acme", connection_extra: str = ""
) -> Path:
    path = tmp_path / "tierflow.toml"
    text = BASE.format(other_org=other_org, connection_extra=connection_extra) + jobs
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, jobs: str = "", **kwargs: str) -> Config:
    return load_config(write(tmp_path, jobs, **kwargs))


def problems(tmp_path: Path, jobs: str, **kwargs: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, jobs, **kwargs)
    return str(caught.value)


DOWN = """
[jobs.down]
kind = "downsample"
source = "{source}"
dest = "{dest}"
measurements = ["sensor"]
every = "5m"
start = "2026-11-01T00:00:00Z"
aggregates = {{ temp = ["mean"] }}
{extra}
"""


def down(source: str = "hot", dest: str = "warm", extra: str = "") -> str:
    return DOWN.format(source=source, dest=dest, extra=extra)


def test_an_influxdb2_connection_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, down(), connection_extra='ca_cert = "/etc/ca.pem"')
    cloud = config.connections["cloud"]
    assert isinstance(cloud, InfluxDB2Connection)
    assert (cloud.org, cloud.max_concurrency, cloud.verify_tls) == ("acme", 8, True)
    assert cloud.ca_cert == Path("/etc/ca.pem")
    assert cloud.timeout == timedelta(seconds=60)  # covers a streamed response, not just a reply
    assert isinstance(cloud.token, FileSecret)
    assert isinstance(config.jobs["down"], DownsampleJob)


def test_a_literal_token_warns_and_is_never_shown(tmp_path: Path) -> None:
    path = write(tmp_path, down())
    path.write_text(
        path.read_text().replace(
            'token = { file = "/run/secrets/influx-token" }', f'token = "{TOKEN}"'
        ),
        encoding="utf-8",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path)
    assert any(
        "[connections.cloud] token is written into the config" in str(w.message) for w in caught
    )
    assert TOKEN not in repr(config.connections["cloud"])
    assert TOKEN not in str(config.connections["cloud"].model_dump())
    # A bad token table reports the key, never the value.
    path.write_text(
        path.read_text().replace(
            f'token = "{TOKEN}"', f'token = {{ value = "{TOKEN}", nope = 1 }}'
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert TOKEN not in str(error.value)


def test_vault_and_aws_token_sources(tmp_path: Path) -> None:
    path = write(tmp_path, down())
    text = path.read_text()
    path.write_text(
        text.replace(
            'token = { file = "/run/secrets/influx-token" }',
            'token = { vault = "influx/tierflow", key = "token", ttl = "1m" }',
        ).replace(
            'token = { env = "OTHER_TOKEN" }',
            'token = { aws_secret = "prod/influx", key = "token", region = "eu-west-1" }',
        ),
        encoding="utf-8",
    )
    config = load_config(path)
    vault, aws = config.connections["cloud"].token, config.connections["other"].token  # type: ignore[union-attr]
    assert isinstance(vault, VaultSecret)
    assert (vault.vault, vault.key, vault.mount, vault.ttl) == (
        "influx/tierflow",
        "token",
        "secret",
        timedelta(minutes=1),
    )
    assert isinstance(aws, AwsSecret)
    assert (aws.aws_secret, aws.key, aws.region) == ("prod/influx", "token", "eu-west-1")


def test_a_cross_org_job_is_refused_with_its_own_message(tmp_path: Path) -> None:
    text = problems(tmp_path, down(dest="foreign"), other_org="globex")
    assert '[jobs.down] dest = "foreign"' in text
    assert "source tier 'hot' is in org 'acme' and dest tier 'foreign' in org 'globex'" in text
    assert "allow_cross_org = true" in text
    assert "cross-connection" not in text  # the org message comes first, alone


def test_an_allowed_cross_org_downsample_is_a_relay(tmp_path: Path) -> None:
    config = load(
        tmp_path, down(dest="foreign", extra="allow_cross_org = true"), other_org="globex"
    )
    assert is_relay(config, "down")


@pytest.mark.parametrize(("source", "dest"), [("hot", "plant_warm"), ("plant_hot", "warm")])
def test_a_downsample_across_the_two_dialects_is_a_relay(
    tmp_path: Path, source: str, dest: str
) -> None:
    assert is_relay(load(tmp_path, down(source, dest)), "down")


def test_replace_is_decided_by_the_dest_which_is_where_it_deletes(tmp_path: Path) -> None:
    into_2x = load(tmp_path, down("plant_hot", "warm", "replace = true")).jobs["down"]
    assert into_2x.replace
    text = problems(tmp_path, down("hot", "plant_warm", "replace = true"))
    assert "[jobs.down] replace = True: not supported on InfluxDB 1.x" in text


def test_a_query_job_across_connections_is_refused(tmp_path: Path) -> None:
    (tmp_path / "q.flux.j2").write_text("// unused\n", encoding="utf-8")
    job = (
        '[jobs.q]\nkind = "query"\nsource = "hot"\ndest = "plant_warm"\n'
        'measurements = ["sensor"]\nevery = "5m"\nstart = "2026-11-01T00:00:00Z"\n'
        'template = "q.flux.j2"\n'
    )
    text = problems(tmp_path, job)
    assert '[jobs.q] dest = "plant_warm"' in text
    assert "query jobs run on one server" in text


def test_replace_is_refused_on_influxdb1_with_the_reason(tmp_path: Path) -> None:
    text = problems(tmp_path, down("plant_hot", "plant_warm", "replace = true"))
    assert "[jobs.down] replace = True: not supported on InfluxDB 1.x" in text
    assert "every retention policy of the database" in text


def test_replace_is_accepted_on_influxdb2(tmp_path: Path) -> None:
    assert load(tmp_path, down(extra="replace = true")).jobs["down"].replace


QUERY = """
[jobs.kwh_daily]
kind = "query"
source = "{source}"
dest = "{dest}"
template = "{template}"
params = {{ site = "berlin", factor = 0.001 }}
cron = "0 0 * * *"
start = "2026-11-01T00:00:00Z"
{extra}
"""


def query_job(template: str, source: str = "hot", dest: str = "warm", extra: str = "") -> str:
    return QUERY.format(template=template, source=source, dest=dest, extra=extra)


def test_a_query_job_loads_with_its_template_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "kwh.flux.j2").write_text("x", encoding="utf-8")
    config = load(tmp_path, query_job("templates/kwh.flux.j2"))
    job = config.jobs["kwh_daily"]
    assert isinstance(job, QueryJob)
    assert job.params == {"site": "berlin", "factor": 0.001}
    assert config.template_path(job) == tmp_path / "templates" / "kwh.flux.j2"
    assert job.chunk == timedelta(0)  # no coalescing unless the template is written for it


def test_a_query_job_template_must_exist_and_match_the_dialect(tmp_path: Path) -> None:
    text = problems(tmp_path, query_job("missing.flux.j2"))
    assert '[jobs.kwh_daily] template = "missing.flux.j2": no such file' in text
    (tmp_path / "kwh.influxql.j2").write_text("x", encoding="utf-8")
    text = problems(tmp_path, query_job("kwh.influxql.j2"))
    assert "the source connection is influxdb2: its templates end in .flux.j2" in text


def test_a_query_job_cannot_recheck(tmp_path: Path) -> None:
    (tmp_path / "kwh.flux.j2").write_text("x", encoding="utf-8")
    text = problems(tmp_path, query_job("kwh.flux.j2", extra='recheck = "1h"'))
    assert '[jobs.kwh_daily] recheck = "1h": query jobs cannot recheck' in text


def test_replace_needs_measurements_to_know_what_to_delete(tmp_path: Path) -> None:
    (tmp_path / "kwh.flux.j2").write_text("x", encoding="utf-8")
    text = problems(tmp_path, query_job("kwh.flux.j2", extra="replace = true"))
    assert "[jobs.kwh_daily] replace = True: needs 'measurements'" in text
    config = load(tmp_path, query_job("kwh.flux.j2", extra='replace = true\nmeasurements = ["m"]'))
    assert config.jobs["kwh_daily"].replace
