"""`tierflow validate` refuses jobs that write the same points; `validate --online` knows the
source's field types, and `run-once` warns about fields the source lacks: on the real influxd,
through the real command.

The oracle for which aggregate takes which type is the server itself: every aggregate is run on
a field of every type InfluxDB 1.6.7 can store, and its answer is compared with the rule
tierflow applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import EVERY, job, ns
from tests.integration.conftest import ConfigWriter
from tests.integration.test_cli import tierflow
from tierflow._archive import FieldType
from tierflow._config import AGGREGATES
from tierflow._field_check import ACCEPTED_TYPES
from tierflow.testing import InfluxdError, ThrowawayInfluxd

JobsWriter = Callable[..., Path]

# One point per window for two hours: a float, an integer, a boolean and a string field.
LITERALS = {"temp": "21.5", "count": "3i", "ok": "true", "status": '"running"'}
TYPES = {
    "temp": FieldType.FLOAT,
    "count": FieldType.INTEGER,
    "ok": FieldType.BOOLEAN,
    "status": FieldType.STRING,
}


def write_sensor(influxd: ThrowawayInfluxd, db: str, start: datetime) -> None:
    fields = ",".join(f"{name}={value}" for name, value in LITERALS.items())
    influxd.write(
        [f"sensor,site=berlin {fields} {ns(start + i * EVERY)}" for i in range(24)], db=db
    )


@pytest.mark.parametrize("field", sorted(TYPES))
def test_the_influxql_rules_are_the_servers_own(
    influxd: ThrowawayInfluxd, db: str, start: datetime, field: str
) -> None:
    write_sensor(influxd, db, start)
    for function in sorted(AGGREGATES):
        query = (
            f'SELECT {function}("{field}") FROM "sensor" WHERE time >= {ns(start)} '
            f"AND time < {ns(start + timedelta(hours=2))} GROUP BY time(5m), *"
        )
        try:
            influxd.query(query, db=db)
            refusal = ""
        except InfluxdError as exc:
            refusal = str(exc)
        accepted = refusal == ""
        assert accepted or f"unsupported {function} iterator type" in refusal
        rule = TYPES[field] in ACCEPTED_TYPES["influxql"][function]
        assert rule == accepted, f"{function}({field}): tierflow says {rule}, influxd {accepted}"


def validate_online(config: Path, tmp_path: Path) -> tuple[int, str]:
    result = tierflow("validate", "--online", "-c", config, cwd=tmp_path)
    return result.returncode, result.stderr


@pytest.fixture
def sensor(influxd: ThrowawayInfluxd, db: str, start: datetime) -> None:
    """`db` holds the two hours of `sensor` points of `write_sensor`."""
    write_sensor(influxd, db, start)


@pytest.fixture
def downsamples(db: str, start: datetime, write_config: ConfigWriter) -> JobsWriter:
    """`downsamples(name={overrides}, …)` writes a config of downsample jobs on `db`, each
    `job(start, **overrides)`, and returns its path."""

    def write(**jobs: dict[str, Any]) -> Path:
        return write_config(db, {name: job(start, **body) for name, body in jobs.items()})

    return write


@pytest.mark.usefixtures("sensor")
def test_a_clean_config_passes(downsamples: JobsWriter, tmp_path: Path) -> None:
    aggregates = {
        "temp": ["mean", "median", "stddev", "spread", "sum", "min", "max"],
        "count": ["sum", "mean"],
        "ok": ["count", "first", "last", "min", "max", "mode"],
        "status": ["count", "first", "last", "mode"],
    }
    config = downsamples(down={"aggregates": aggregates})

    assert validate_online(config, tmp_path) == (0, "")


def test_a_source_with_no_data_yet_is_a_warning_not_a_refusal(
    downsamples: JobsWriter, tmp_path: Path
) -> None:
    """Before the first point lands (a fresh setup) the fields cannot be checked: validate says
    so on stderr and exits 0; once data is there, a misspelt field is refused (below)."""
    config = downsamples(down={"aggregates": {"temp": ["mean"]}})

    code, stderr = validate_online(config, tmp_path)

    assert code == 0, stderr
    assert "warning:" in stderr
    assert "measurement 'sensor' has no data in tier hot yet" in stderr


@pytest.mark.usefixtures("sensor")
def test_type_mistakes_and_a_misspelt_field_are_reported_at_once(
    downsamples: JobsWriter, tmp_path: Path
) -> None:
    aggregates = {"status": ["mean"], "tmep": ["mean"], "ok": ["sum"], "temp": ["max"]}
    config = downsamples(down={"aggregates": aggregates})

    code, stderr = validate_online(config, tmp_path)

    assert code == 2, stderr
    assert f"{config}: 3 problem(s)" in stderr
    assert (
        "job down, connection plant: measurement 'sensor' field 'status' is string in the "
        "source: aggregate mean does not apply to string fields"
    ) in stderr
    assert (
        "job down, connection plant: measurement 'sensor' has no field 'tmep' in the source "
        "(its fields: count, ok, status, temp)"
    ) in stderr
    assert (
        "job down, connection plant: measurement 'sensor' field 'ok' is boolean in the "
        "source: aggregate sum does not apply to boolean fields"
    ) in stderr
    assert "Traceback" not in stderr
    # Offline, the same config is valid: only the server knows the fields.
    assert tierflow("validate", "-c", config, cwd=tmp_path).returncode == 0


@pytest.mark.usefixtures("sensor")
def test_a_field_with_two_types_across_shards_is_refused_if_either_is(
    influxd: ThrowawayInfluxd, db: str, start: datetime, downsamples: JobsWriter, tmp_path: Path
) -> None:
    # Another shard group (autogen's are 7 days long) holds `count` as a string.
    influxd.write([f'sensor,site=berlin count="three" {ns(start - timedelta(days=30))}'], db=db)
    counted = downsamples(down={"aggregates": {"count": ["count", "last"]}})
    assert validate_online(counted, tmp_path) == (0, "")

    summed = downsamples(down={"aggregates": {"count": ["sum"]}})
    code, stderr = validate_online(summed, tmp_path)
    assert code == 2, stderr
    assert (
        "measurement 'sensor' field 'count' is integer and string in the source: aggregate sum "
        "does not apply to string fields"
    ) in stderr


@pytest.mark.usefixtures("sensor")
def test_run_once_warns_once_per_job_about_fields_the_source_lacks(
    start: datetime, downsamples: JobsWriter, tmp_path: Path
) -> None:
    config = downsamples(
        typo={"aggregates": {"tmep": ["mean"], "temp": ["max"]}, "catchup_chunk": "5m"},
        fine={"aggregates": {"temp": ["mean"]}, "into": "{{ measurement }}_fine"},
    )
    now = start + timedelta(hours=2)

    result = tierflow(
        "--log-level",
        "warning",
        "run-once",
        "-c",
        config,
        "--now",
        now.isoformat(),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warned = [event for event in events if event["event"] == "fields_missing"]
    assert len(warned) == 1, result.stderr  # 24 windows, one warning
    (event,) = warned
    assert event["job"] == "typo"
    assert event["measurement"] == "sensor"
    assert event["fields"] == ["tmep"]
    assert event["level"] == "warning"


def test_validate_refuses_two_jobs_writing_the_same_points(
    downsamples: JobsWriter, tmp_path: Path
) -> None:
    aggregates = {"temp": ["mean"]}
    clash = downsamples(
        temp_5m={"aggregates": aggregates},
        temp_1h={"aggregates": aggregates, "every": "1h"},
    )

    result = tierflow("validate", "-c", clash, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert (
        f'{clash}: [jobs.temp_1h] dest = "warm": it and [jobs.temp_5m] both write field(s) '
        "temp_mean of measurement 'sensor' in tier warm"
    ) in result.stderr
    assert "set 'into' on one of them" in result.stderr
    fixed = downsamples(
        temp_5m={"aggregates": aggregates},
        temp_1h={"aggregates": aggregates, "every": "1h", "into": "{{ measurement }}_1h"},
    )
    assert tierflow("validate", "-c", fixed, cwd=tmp_path).returncode == 0
