"""Jobs whose outputs can land on the same point are refused at config validation (`_overlap`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tierflow._config import Config, parse_config
from tierflow._errors import ConfigError

PATH = Path("/srv/tierflow.toml")
START = datetime(2026, 11, 1, tzinfo=UTC)
INTO_HINT = "set 'into' on one of them"


@pytest.fixture(autouse=True)
def _no_state_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_STATE", raising=False)


def downsample(**body: object) -> dict[str, object]:
    return {
        "kind": "downsample",
        "source": "hot",
        "dest": "warm",
        "measurements": ["sensor"],
        "every": "5m",
        "start": START,
        "aggregates": {"temp": ["mean"]},
        **body,
    }


def archive(**body: object) -> dict[str, object]:
    return {
        "kind": "archive",
        "source": "hot",
        "dest": "cold",
        "measurements": ["sensor"],
        "every": "1h",
        "start": START,
        **body,
    }


def config(
    jobs: Mapping[str, Mapping[str, object]],
    *,
    tiers: Mapping[str, Mapping[str, object]] | None = None,
    connections: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    raw: dict[str, Any] = {
        "state": {"url": "memory://"},
        "connections": connections
        or {"plant": {"kind": "influxdb1", "url": "http://127.0.0.1:8086"}},
        "tiers": tiers
        or {
            "hot": {"connection": "plant", "bucket": "plant/autogen"},
            "warm": {"connection": "plant", "bucket": "plant/warm"},
            "cold": {"archive": "/var/archive"},
        },
        "jobs": jobs,
    }
    return parse_config(raw, PATH)


def refusal(jobs: Mapping[str, Mapping[str, object]], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config(jobs, **kwargs)
    return str(caught.value)


# -- downsample jobs ---------------------------------------------------------------------------


def test_a_5m_and_an_hourly_mean_into_one_measurement_are_refused_naming_both() -> None:
    message = refusal({"temp_5m": downsample(), "temp_1h": downsample(every="1h")})

    assert message.startswith(f"{PATH}: 1 problem(s) in the config\n")
    assert (
        f'{PATH}: [jobs.temp_1h] dest = "warm": it and [jobs.temp_5m] both write field(s) '
        "temp_mean of measurement 'sensor' in tier warm for the same series"
    ) in message
    assert INTO_HINT in message


def test_into_on_one_of_them_fixes_it() -> None:
    loaded = config(
        {
            "temp_5m": downsample(),
            "temp_1h": downsample(every="1h", into="{{ measurement }}_1h"),
        }
    )
    assert set(loaded.jobs) == {"temp_5m", "temp_1h"}


def test_different_output_fields_do_not_overlap() -> None:
    config(
        {
            "means": downsample(),
            "maxima": downsample(every="1h", aggregates={"temp": ["max"]}),
            "other": downsample(aggregates={"humidity": ["mean"]}),
        }
    )


def test_only_the_shared_output_fields_are_named() -> None:
    message = refusal(
        {
            "a": downsample(aggregates={"temp": ["mean", "max"], "rh": ["min"]}),
            "b": downsample(aggregates={"temp": ["max", "count"], "rh": ["min"]}),
        }
    )
    assert "both write field(s) rh_min, temp_max of measurement 'sensor'" in message


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ({"site": "berlin"}, {"site": "paris"}, False),  # one key, two values: disjoint
        ({"site": "berlin"}, {"site": "berlin"}, True),
        ({"site": "berlin"}, {}, True),  # no filter overlaps everything
        ({}, {}, True),
        ({"site": "berlin"}, {"host": "h1"}, True),  # h1 may report from berlin
        ({"site": "berlin", "host": "h1"}, {"site": "paris", "host": "h1"}, False),
    ],
)
def test_tag_filters_that_make_the_series_disjoint_do_not_overlap(
    first: dict[str, str], second: dict[str, str], overlap: bool
) -> None:
    jobs = {"a": downsample(tags=first), "b": downsample(every="1h", tags=second)}
    if overlap:
        assert "[jobs.b] dest" in refusal(jobs)
    else:
        config(jobs)


def test_two_tier_names_for_one_retention_policy_are_one_place() -> None:
    tiers = {
        "hot": {"connection": "plant", "bucket": "plant/autogen"},
        "warm": {"connection": "plant", "bucket": "plant/warm"},
        "warm_too": {"connection": "plant", "bucket": "plant/warm"},
    }
    message = refusal(
        {"a": downsample(), "b": downsample(dest="warm_too", every="1h")}, tiers=tiers
    )
    assert '[jobs.b] dest = "warm_too": it and [jobs.a] both write' in message
    assert "in tier warm/warm_too" in message


def test_two_connections_to_one_server_are_one_server() -> None:
    connections = {
        "plant": {"kind": "influxdb1", "url": "http://127.0.0.1:8086"},
        "again": {"kind": "influxdb1", "url": "http://127.0.0.1:8086/"},
    }
    tiers = {
        "hot": {"connection": "plant", "bucket": "plant/autogen"},
        "warm": {"connection": "plant", "bucket": "plant/warm"},
        "warm2": {"connection": "again", "bucket": "plant/warm"},
    }
    assert "[jobs.b] dest" in refusal(
        {"a": downsample(), "b": downsample(dest="warm2")}, tiers=tiers, connections=connections
    )


def test_a_database_without_a_policy_may_be_any_of_its_policies() -> None:
    tiers = {
        "hot": {"connection": "plant", "bucket": "plant/autogen"},
        "warm": {"connection": "plant", "bucket": "plant/warm"},
        "default": {"connection": "plant", "bucket": "plant"},
        "other": {"connection": "plant", "bucket": "plant/other"},
    }
    assert "[jobs.b] dest" in refusal(
        {"a": downsample(), "b": downsample(dest="default")}, tiers=tiers
    )
    config({"a": downsample(), "b": downsample(dest="other")}, tiers=tiers)


def test_2x_buckets_are_places_per_server_and_org() -> None:
    def v2(org: str) -> dict[str, object]:
        url = "http://127.0.0.1:8086"
        return {"kind": "influxdb2", "url": url, "org": org, "token": {"env": "T"}}

    connections = {"plant": v2("acme"), "same": v2("acme"), "other_org": v2("umbrella")}
    tiers = {
        "hot": {"connection": "plant", "bucket": "hot"},
        "warm": {"connection": "plant", "bucket": "warm"},
        "warm_same": {"connection": "same", "bucket": "warm"},
        "warm_other": {"connection": "other_org", "bucket": "warm"},
    }
    assert "[jobs.b] dest" in refusal(
        {"a": downsample(), "b": downsample(dest="warm_same")},
        tiers=tiers,
        connections=connections,
    )
    config(
        {"a": downsample(), "b": downsample(dest="warm_other", allow_cross_org=True)},
        tiers=tiers,
        connections=connections,
    )


def test_two_measurements_of_one_job_into_one_are_refused() -> None:
    message = refusal({"all": downsample(measurements=["cpu_a", "cpu_b"], into="cpu", every="1h")})
    assert (
        "[jobs.all] into = \"cpu\": its measurements 'cpu_a' and 'cpu_b' both write field(s) "
        "temp_mean of measurement 'cpu'"
    ) in message


def test_every_overlapping_pair_is_reported_at_once() -> None:
    message = refusal({"a": downsample(), "b": downsample(every="1h"), "c": downsample(every="1d")})
    assert message.startswith(f"{PATH}: 3 problem(s) in the config\n")
    for later, earlier in [("b", "a"), ("c", "a"), ("c", "b")]:
        assert f'[jobs.{later}] dest = "warm": it and [jobs.{earlier}] both write' in message


# -- query jobs --------------------------------------------------------------------------------


def query(tmp_path: Path, **body: object) -> dict[str, object]:
    template = tmp_path / "q.influxql.j2"
    template.write_text("SELECT 1", encoding="utf-8")
    return {
        "kind": "query",
        "source": "hot",
        "dest": "warm",
        "template": str(template),
        "every": "1h",
        "start": START,
        **body,
    }


def test_a_query_job_declaring_a_measurement_overlaps_any_job_writing_it(
    tmp_path: Path,
) -> None:
    message = refusal({"a": downsample(), "q": query(tmp_path, measurements=["sensor"])})
    assert '[jobs.q] dest = "warm": it and [jobs.a] both write field(s) temp_mean' in message

    message = refusal(
        {
            "q": query(tmp_path, measurements=["sensor"]),
            "r": query(tmp_path, measurements=["sensor"], tags={"site": "paris"}),
        }
    )
    assert (
        '[jobs.r] dest = "warm": it and [jobs.q] both write fields (a query job\'s template '
        "decides them) of measurement 'sensor'"
    ) in message

    config({"a": downsample(), "q": query(tmp_path, measurements=["sensor"], into="daily")})
    config({"a": downsample(), "q": query(tmp_path)})  # outputs unknown: not checked


# -- archive jobs ------------------------------------------------------------------------------


def test_archive_jobs_with_the_same_windows_replace_each_others_files() -> None:
    # Even with disjoint tag filters: the cold tier names a window's file by measurement and
    # window only, so the second job's file replaces the first's.
    message = refusal(
        {
            "berlin": archive(tags={"site": "berlin"}),
            "paris": archive(tags={"site": "paris"}),
        }
    )
    assert (
        '[jobs.paris] dest = "cold": it and [jobs.berlin] both archive measurement(s) sensor '
        "into the same cold tier: the cold tier keeps one file per measurement and window"
    ) in message


def test_archive_jobs_with_different_windows_would_archive_points_twice() -> None:
    message = refusal({"hourly": archive(), "daily": archive(every="1d")})
    assert "both archive the same points" in message


def test_archive_jobs_that_can_never_meet_are_accepted() -> None:
    tiers = {
        "hot": {"connection": "plant", "bucket": "plant/autogen"},
        "cold": {"archive": "/var/archive"},
        "cold_too": {"archive": "file:///var/archive/"},
        "elsewhere": {"archive": "/var/other"},
    }
    config(
        {
            "berlin": archive(tags={"site": "berlin"}),
            "paris": archive(tags={"site": "paris"}, every="1d"),
            "other": archive(dest="elsewhere"),
            "another_measurement": archive(measurements=["power"], dest="cold_too"),
        },
        tiers=tiers,
    )
    message = refusal({"a": archive(), "b": archive(dest="cold_too")}, tiers=tiers)
    assert '[jobs.b] dest = "cold_too": it and [jobs.a] both archive' in message
