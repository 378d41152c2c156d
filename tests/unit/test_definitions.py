"""Job definitions: which settings count as a change of output, and what run/reset do with them."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tierflow._config import Config, parse_config
from tierflow._definitions import (
    JobRedefinedError,
    accept_definitions,
    check_definitions,
    job_definition,
    reset_job,
)
from tierflow._state import MemoryStateStore, Outcome, RunStatus
from tierflow._windows import Window

START = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def make_config(
    *, job: dict[str, Any] | None = None, connection: dict[str, Any] | None = None, **tiers: Any
) -> Config:
    body: dict[str, Any] = {
        "kind": "downsample",
        "source": "raw",
        "dest": "rollup",
        "measurements": ["cpu", "mem"],
        "every": "1h",
        "start": START,
        "aggregates": {"usage": ["mean", "max"]},
    }
    body.update(job or {})
    body = {key: value for key, value in body.items() if value is not None}  # TOML has no null
    raw = {
        "connections": {
            "plant": {
                "kind": "influxdb1",
                "url": "http://influx.example:8086",
                **(connection or {}),
            }
        },
        "tiers": {
            "raw": {"connection": "plant", "bucket": "raw/autogen"},
            "rollup": {"connection": "plant", "bucket": "rollup/warm"},
            "other": {"connection": "plant", "bucket": "rollup/cold"},
            **tiers,
        },
        "jobs": {"cpu": body},
    }
    return parse_config(raw, Path("t.toml"))


def digest(config: Config) -> str:
    return job_definition(config, "cpu").digest


BASE = make_config()


async def ran_once() -> MemoryStateStore:
    """A store in which the first window of BASE's job succeeded under BASE's definition."""
    store = MemoryStateStore()
    await finished(store, 0)
    await store.record_definition("cpu", job_definition(BASE, "cpu"))
    return store


# ---------------------------------------------------------------------------------------------
# which keys count


@pytest.mark.parametrize(
    "job",
    [
        {"offset": "5m"},
        {"catchup_chunk": "6h"},
        {"parallel_windows": 4},
        {"recheck": "2h"},
        {"max_catchup": "2d"},
        {"measurements": ["mem", "cpu"]},  # order does not change the output
        {"aggregates": {"usage": ["max", "mean"]}},
        {"every": "60m"},  # the same duration, written another way
    ],
    ids=lambda job: next(iter(job)),
)
def test_settings_that_do_not_change_the_output_do_not_count(job: dict[str, Any]) -> None:
    assert digest(make_config(job=job)) == digest(BASE)


@pytest.mark.parametrize(
    "connection",
    [
        {"max_concurrency": 9, "timeout": "1m"},
        {"retry": {"attempts": 2}, "circuit": {"failures": 9}},
        {"username": "tierflow", "password": {"env": "TIERFLOW_TEST_PW"}},  # not a place
        {"url": "http://Influx.Example:8086/"},
    ],
)
def test_connection_settings_other_than_the_server_do_not_count(
    connection: dict[str, Any],
) -> None:
    assert digest(make_config(connection=connection)) == digest(BASE)


def test_renaming_a_tier_is_not_a_change() -> None:
    renamed = make_config(
        job={"dest": "warm"}, warm={"connection": "plant", "bucket": "rollup/warm"}
    )
    assert digest(renamed) == digest(BASE)


@pytest.mark.parametrize(
    ("job", "key"),
    [
        ({"dest": "other"}, "dest"),
        ({"source": "other"}, "source"),
        ({"measurements": ["cpu"]}, "measurements"),
        ({"tags": {"site": "berlin"}}, "tags"),
        ({"aggregates": {"usage": ["mean"]}}, "aggregates"),
        ({"into": "{{ measurement }}_1h"}, "into"),
        ({"every": "30m"}, "every"),
        ({"start": START + H}, "start"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value)),
)
async def test_settings_that_change_the_output_count(job: dict[str, Any], key: str) -> None:
    store = await ran_once()
    (check,) = await check_definitions(make_config(job=job), store)
    assert check.state == "changed"
    assert [change.key for change in check.changes] == [key]


async def test_a_schedule_change_from_every_to_cron_names_both() -> None:
    store = await ran_once()
    cron = make_config(job={"every": None, "cron": "0 * * * *"})
    (check,) = await check_definitions(cron, store)
    assert [str(c) for c in check.changes] == ["cron: (none) → 0 * * * *", "every: 1h → (none)"]


async def test_a_moved_server_counts() -> None:
    # The config refuses credentials and query strings in URLs (url-secrets): none to leave out.
    moved = make_config(connection={"url": "http://influx2.example:8086"})
    store = await ran_once()
    (check,) = await check_definitions(moved, store)
    dest, source = check.changes  # both tiers live on the moved server
    assert source.key == "source"
    assert str(dest) == (
        "dest: influxdb1 http://influx.example:8086 rollup/warm"
        " → influxdb1 http://influx2.example:8086 rollup/warm"
    )


def test_query_jobs_count_their_template_text_and_params(tmp_path: Path) -> None:
    template = tmp_path / "q.influxql.j2"
    template.write_text("SELECT 1", encoding="utf-8")

    def query_config(params: dict[str, Any]) -> Config:
        raw = {
            "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
            "tiers": {
                "raw": {"connection": "plant", "bucket": "raw"},
                "rollup": {"connection": "plant", "bucket": "rollup"},
            },
            "jobs": {
                "cpu": {
                    "kind": "query",
                    "source": "raw",
                    "dest": "rollup",
                    "every": "1h",
                    "start": START,
                    "template": "q.influxql.j2",
                    "params": params,
                }
            },
        }
        return parse_config(raw, tmp_path / "t.toml")

    first = job_definition(query_config({"factor": 1}), "cpu")
    assert json.loads(first.body)["template"] == "q.influxql.j2"
    assert job_definition(query_config({"factor": 2}), "cpu") != first
    template.write_text("SELECT 2", encoding="utf-8")
    assert job_definition(query_config({"factor": 1}), "cpu") != first


def test_archive_tiers_count_by_resolved_location(tmp_path: Path) -> None:
    def archive_config(archive: str, config_dir: Path) -> Config:
        raw = {
            "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
            "tiers": {
                "raw": {"connection": "plant", "bucket": "raw"},
                "cold": {"archive": archive},
            },
            "jobs": {
                "cpu": {
                    "kind": "archive",
                    "source": "raw",
                    "dest": "cold",
                    "every": "1h",
                    "start": START,
                    "measurements": ["cpu"],
                }
            },
        }
        return parse_config(raw, config_dir / "t.toml")

    relative = job_definition(archive_config("archive", tmp_path), "cpu")
    assert relative == job_definition(archive_config(str(tmp_path / "archive"), tmp_path), "cpu")
    assert relative != job_definition(archive_config("archive", tmp_path / "elsewhere"), "cpu")


# ---------------------------------------------------------------------------------------------
# accepting before a run, and reset


async def finished(store: MemoryStateStore, *hours: int) -> None:
    await store.ensure_job("cpu", START)
    windows = [Window(START + k * H, START + (k + 1) * H) for k in hours]
    assert await store.claim(
        "cpu", windows, run_id="r", started_at=START, lease_expires_at=START + H
    )
    await store.finish("cpu", windows, run_id="r", outcome=Outcome(RunStatus.SUCCEEDED, START, 1.0))


async def test_a_new_job_records_its_definition(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStateStore()
    with caplog.at_level(logging.INFO, logger="tierflow"):
        await accept_definitions(BASE, store, None)
    assert await store.definition("cpu") == job_definition(BASE, "cpu")
    assert [r.getMessage() for r in caplog.records] == ["definition_recorded"]


async def test_a_ledger_from_before_definitions_is_accepted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStateStore()
    await finished(store, 0, 1)
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        await accept_definitions(make_config(job={"dest": "other"}), store, None)
    assert await store.definition("cpu") == job_definition(
        make_config(job={"dest": "other"}), "cpu"
    )
    (record,) = caplog.records
    assert record.getMessage() == "definition_recorded"
    assert record.tierflow_fields["previous"] == "unrecorded"  # type: ignore[attr-defined]


async def test_a_changed_definition_is_refused_naming_job_change_and_ways_forward() -> None:
    store = MemoryStateStore()
    await finished(store, 0, 1)
    await store.record_definition("cpu", job_definition(BASE, "cpu"))
    with pytest.raises(JobRedefinedError) as refused:
        await accept_definitions(make_config(job={"dest": "other"}), store, None)
    message = str(refused.value)
    assert "job cpu" in message
    assert "dest: influxdb1 http://influx.example:8086 rollup/warm → " in message
    assert "rollup/cold" in message
    assert "tierflow reset cpu" in message
    assert "old definition back" in message
    assert await store.definition("cpu") == job_definition(BASE, "cpu")  # nothing recorded


async def test_a_job_that_never_ran_may_change_freely() -> None:
    store = MemoryStateStore()
    await accept_definitions(BASE, store, None)
    changed = make_config(job={"dest": "other"})
    await accept_definitions(changed, store, None)
    assert await store.definition("cpu") == job_definition(changed, "cpu")


@pytest.mark.parametrize("hour", [0, 3])
async def test_a_job_none_of_whose_windows_is_done_may_change_freely(
    hour: int, caplog: pytest.LogCaptureFixture
) -> None:
    """E.g. every window failed at a wrong server URL: once it is fixed, nothing is stale."""
    store = MemoryStateStore()
    await store.ensure_job("cpu", START)
    window = Window(START + hour * H, START + (hour + 1) * H)
    assert await store.claim(
        "cpu", [window], run_id="r", started_at=START, lease_expires_at=START + H
    )
    await store.finish("cpu", [window], run_id="r", outcome=Outcome(RunStatus.FAILED, START, 1.0))
    await store.record_definition("cpu", job_definition(BASE, "cpu"))
    moved = make_config(connection={"url": "http://influx.example:9999"})
    (check,) = await check_definitions(moved, store)
    assert check.state == "new"
    with caplog.at_level(logging.INFO, logger="tierflow"):
        await accept_definitions(moved, store, None)
    assert await store.definition("cpu") == job_definition(moved, "cpu")
    (record,) = caplog.records
    assert record.tierflow_fields["previous"] == "replaced"  # type: ignore[attr-defined]


async def test_a_done_window_beyond_a_failed_first_one_still_counts() -> None:
    store = MemoryStateStore()
    await finished(store, 2)
    await store.record_definition("cpu", job_definition(BASE, "cpu"))
    assert await store.watermark("cpu") == START  # held at the gap
    (check,) = await check_definitions(make_config(job={"dest": "other"}), store)
    assert check.state == "changed"


async def test_reset_forgets_everything_by_default_and_records_the_definition() -> None:
    store = MemoryStateStore()
    await finished(store, 0, 1, 2)
    await store.record_definition("cpu", job_definition(BASE, "cpu"))
    changed = make_config(job={"dest": "other"})
    dry = await reset_job(changed, store, "cpu", None, dry_run=True)
    assert (dry.windows, dry.watermark_before, dry.watermark_after) == (3, START + 3 * H, START)
    assert [c.key for c in dry.changes] == ["dest"]
    assert await store.watermark("cpu") == START + 3 * H  # a dry run changes nothing
    assert await store.definition("cpu") == job_definition(BASE, "cpu")
    done = await reset_job(changed, store, "cpu", None, dry_run=False)
    assert done == dry
    assert await store.watermark("cpu") == START
    assert await store.entries("cpu", START - H) == []
    await accept_definitions(changed, store, None)  # no longer refused


async def test_reset_from_an_instant_forgets_from_the_window_holding_it() -> None:
    store = MemoryStateStore()
    await finished(store, 0, 1, 2, 3)
    done = await reset_job(BASE, store, "cpu", START + 2 * H + timedelta(minutes=20), dry_run=False)
    assert done.since == START + 2 * H
    assert done.windows == 2
    assert await store.watermark("cpu") == START + 2 * H
    assert [e.window.start for e in await store.entries("cpu", START)] == [START, START + H]
