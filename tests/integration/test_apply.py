"""`tierflow apply` against a real influxd 1.6.7, through the console script: the database and
retention policies it makes, read back with SHOW RETENTION POLICIES; a second apply changing
nothing; updates; --dry-run; the shrink guards (--force for pending windows, --allow-shrink for
data the server would delete, counted against what the test wrote); refusals that change nothing;
the JSON shape. (2.x buckets: tests/unit/test_apply.py, against the recording stand-in.)"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Databases, hour_floor_days_ago, toml_value
from tests.integration.test_cli import ok_json, rfc3339, tierflow
from tierflow.testing import ThrowawayInfluxd

Tiers = Mapping[str, Mapping[str, str]]
# SHOW RETENTION POLICIES as (duration, shard group duration, default) by policy name.
Policies = dict[str, tuple[str, str, bool]]

TIERS: Tiers = {
    "hot": {"bucket": "{db}", "retention": "7d"},
    "warm": {"bucket": "{db}/warm", "retention": "30d", "shard_duration": "1d"},
    "forever": {"bucket": "{db}/forever"},
    "cold": {"archive": "archive/cold"},
}
AS_MADE: Policies = {
    "autogen": ("168h0m0s", "24h0m0s", True),
    "warm": ("720h0m0s", "24h0m0s", False),
    "forever": ("0s", "168h0m0s", False),
}


@dataclass
class Apply:
    """One test's database (not made: apply makes it), config directory and server."""

    server: ThrowawayInfluxd
    directory: Path
    db: str

    def configure(self, tiers: Tiers = TIERS, *, job_start: datetime | None = None) -> None:
        lines = [
            "[state]",
            f"url = {toml_value('sqlite:///' + str(self.directory / 'state.db'))}",
            "[connections.plant]",
            'kind = "influxdb1"',
            f"url = {toml_value(self.server.url)}",
        ]
        for name, body in tiers.items():
            lines.append(f"[tiers.{name}]")
            if "archive" not in body:
                lines.append('connection = "plant"')
            lines += [f"{k} = {toml_value(v.format(db=self.db))}" for k, v in body.items()]
        if job_start is not None:
            lines += [
                "[jobs.down]",
                'kind = "downsample"',
                'source = "hot"',
                'dest = "warm"',
                'every = "1h"',
                f"start = {toml_value(job_start)}",
                'measurements = ["cpu"]',
                'aggregates = { usage = ["mean"] }',
            ]
        (self.directory / "tierflow.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return tierflow("apply", *args, cwd=self.directory)

    def changes(self, *args: str, code: int = 0) -> dict[str, tuple[str, str]]:
        """`apply --json`: (action, detail) by tier, after checking the JSON's shape."""
        body = ok_json(self.run("--json", *args), code)
        assert set(body) == {"changes"}
        assert all(set(change) == {"tier", "action", "detail"} for change in body["changes"])
        return {c["tier"]: (c["action"], c["detail"]) for c in body["changes"]}

    def actions(self, *args: str) -> dict[str, str]:
        return {tier: action for tier, (action, _) in self.changes(*args).items()}

    def policies(self) -> Policies | None:
        """The database's policies, None if it does not exist."""
        (result,) = self.server.query("SHOW DATABASES")
        names = {row[0] for series in result.get("series", []) for row in series.get("values", [])}
        if self.db not in names:
            return None
        (result,) = self.server.query(f'SHOW RETENTION POLICIES ON "{self.db}"')
        (series,) = result["series"]
        return {name: (d, shard, default) for name, d, shard, _, default in series["values"]}


@pytest.fixture
def apply(influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path) -> Apply:
    db = f"db_apply_{uuid.uuid4().hex}"
    databases.created.append(db)  # dropped after the test, whether apply made it or not
    return Apply(influxd, tmp_path, db)


def test_apply_makes_the_database_policies_and_archive_then_changes_nothing(apply: Apply) -> None:
    apply.configure()

    made = apply.changes()

    assert {tier: action for tier, (action, _) in made.items()} == dict.fromkeys(TIERS, "create")
    assert (
        made["warm"][1] == f'retention policy "{apply.db}"."warm": duration 30d, shard duration 1d'
    )
    assert apply.policies() == AS_MADE
    assert (apply.directory / "archive" / "cold").is_dir()

    again = apply.changes()

    assert {tier: action for tier, (action, _) in again.items()} == dict.fromkeys(TIERS, "none")
    assert again["hot"][1] == (
        f'retention policy "{apply.db}"."autogen": duration 7d, shard duration 1d'
    )
    assert apply.policies() == AS_MADE


def test_people_get_a_table_and_a_count(apply: Apply) -> None:
    apply.configure()

    result = apply.run()

    assert result.returncode == 0, result.stderr
    assert re.search(
        r"│ warm +│ create │ retention policy \S+\.\"warm\": duration 30d", result.stdout
    )
    assert result.stdout.rstrip().endswith("4 tiers: 4 created, 0 updated, 0 unchanged")


def test_a_changed_retention_or_shard_duration_is_an_update(apply: Apply) -> None:
    apply.configure()
    apply.changes()
    apply.configure(
        {
            **TIERS,
            "hot": {"bucket": "{db}", "retention": "14d"},
            "warm": {"bucket": "{db}/warm", "retention": "60d", "shard_duration": "2d"},
        }
    )

    changes = apply.changes()

    assert {tier: action for tier, (action, _) in changes.items()} == {
        "hot": "update",
        "warm": "update",
        "forever": "none",
        "cold": "none",
    }
    assert changes["warm"][1] == (
        f'retention policy "{apply.db}"."warm": duration 30d → 60d, shard duration 1d → 2d'
    )
    assert apply.policies() == {
        **AS_MADE,
        "autogen": ("336h0m0s", "24h0m0s", True),
        "warm": ("1440h0m0s", "48h0m0s", False),
    }
    assert set(apply.actions().values()) == {"none"}


def test_an_existing_default_policy_gets_the_tiers_retention_and_a_shard_that_fits(
    apply: Apply, databases: Databases
) -> None:
    """A database made by hand has `autogen`, infinite with week-long shards: 1.x refuses a
    two-day duration over week-long shards, so apply lowers them to the server's own default."""
    databases.create(apply.db)
    apply.configure({"hot": {"bucket": "{db}", "retention": "2d"}})

    changes = apply.changes()

    action, detail = changes["hot"]
    assert action == "update"
    assert detail.startswith(
        f'retention policy "{apply.db}"."autogen": duration infinite → 2d, shard duration 7d → 1d '
        "(no data older than "
    )
    policies = apply.policies()
    assert policies is not None
    assert policies["autogen"] == ("48h0m0s", "24h0m0s", True)
    assert apply.actions() == {"hot": "none"}


def test_a_dry_run_changes_nothing(apply: Apply) -> None:
    apply.configure()

    assert apply.actions("--dry-run") == dict.fromkeys(TIERS, "create")
    assert apply.policies() is None
    assert not (apply.directory / "archive").exists()

    apply.changes()
    apply.configure({**TIERS, "warm": {"bucket": "{db}/warm", "retention": "90d"}})
    result = apply.run("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "dry run: nothing changed" in result.stdout
    assert "0 to create, 1 to update, 3 unchanged" in result.stdout
    assert apply.policies() == AS_MADE


def test_a_shrink_below_a_pending_window_is_refused_and_changes_nothing_then_forced(
    apply: Apply,
) -> None:
    start = hour_floor_days_ago(5)  # the job has never run: its windows since then are pending
    apply.configure(job_start=start)
    apply.changes()
    shrunk = {
        **TIERS,
        "hot": {"bucket": "{db}", "retention": "2d"},
        "warm": {"bucket": "{db}/warm", "retention": "60d", "shard_duration": "1d"},
    }
    apply.configure(shrunk, job_start=start)

    for args in [(), ("--dry-run",), ("--json",)]:
        refused = apply.run(*args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stdout == ""
        assert "tier hot: retention 7d → 2d would expire data job down still needs" in (
            refused.stderr
        )
        window = f"[{rfc3339(start)}, {rfc3339(start + timedelta(hours=1))})"
        assert f"its oldest pending window {window}" in refused.stderr
        assert "pass --force" in refused.stderr
        assert apply.policies() == AS_MADE  # warm's growth waits too: nothing changed at all

    forced = apply.changes("--force")

    assert (forced["hot"][0], forced["warm"][0]) == ("update", "update")
    assert apply.policies() == {
        **AS_MADE,
        "autogen": ("48h0m0s", "24h0m0s", True),
        "warm": ("1440h0m0s", "24h0m0s", False),
    }


def test_a_shrink_the_jobs_can_afford_needs_no_force(apply: Apply) -> None:
    start = hour_floor_days_ago(1)  # every pending window is newer than now − 2d
    apply.configure(job_start=start)
    apply.changes()
    apply.configure({**TIERS, "hot": {"bucket": "{db}", "retention": "2d"}}, job_start=start)

    assert apply.actions()["hot"] == "update"
    policies = apply.policies()
    assert policies is not None
    assert policies["autogen"][0] == "48h0m0s"


def test_a_retention_under_an_hour_is_refused_before_anything_is_made(apply: Apply) -> None:
    apply.configure({**TIERS, "warm": {"bucket": "{db}/warm", "retention": "30m"}})

    result = apply.run()

    assert result.returncode == 2
    assert "tier warm: retention 30m is below the server's minimum of 1h" in result.stderr
    assert "nothing was changed" in result.stderr
    assert apply.policies() is None  # not even the database other tiers needed
    assert not (apply.directory / "archive").exists()


def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    from tests.integration._support import free_port

    config = tmp_path / "tierflow.toml"
    lines: list[Any] = [
        "[connections.plant]",
        'kind = "influxdb1"',
        f'url = "http://127.0.0.1:{free_port()}"',
        'timeout = "2s"',
        "[tiers.hot]",
        'connection = "plant"',
        'bucket = "db"',
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = tierflow("apply", "-c", config, cwd=tmp_path)

    assert result.returncode == 1
    assert "unreachable" in result.stderr


NS = 1_000_000_000
# The README's own example, applied to a database that already holds data.
README_HOT: Tiers = {"hot": {"bucket": "{db}", "retention": "7d"}}


def _written_long_ago(apply: Apply, databases: Databases) -> tuple[int, int]:
    """A database made by hand (`autogen` infinite) holding points 30 and 20 days old and an hour
    old; return the field values older than 7 days and the oldest time (ns), as written."""
    databases.create(apply.db)
    now = int(datetime.now(UTC).timestamp()) * NS
    month_ago = now - 30 * 86400 * NS + 123  # a nanosecond part the report must keep
    lines, values = [], 0
    for i in range(40):
        # Every fourth point lacks `n`: the count is of field values, not points.
        fields = f"usage={i}.5" if i % 4 == 0 else f"usage={i}.5,n={i}i"
        values += 1 if i % 4 == 0 else 2
        lines.append(f"cpu,host=h{i % 3} {fields} {month_ago + i * 60 * NS}")
    lines.append(f'mem,host=h0 free=7i,note="x" {now - 20 * 86400 * NS}')
    values += 2
    lines += [f"cpu,host=h0 usage={i}.0,n={i}i {now - 3600 * NS + i * NS}" for i in range(5)]
    apply.server.write(lines, db=apply.db)
    return values, month_ago


def _cutoff_between(text: str, before: datetime, after: datetime) -> None:
    """The cutoff the report names is now − 7d for a `now` taken while apply ran."""
    (cutoff,) = set(re.findall(r"older than (\S+Z)", text))
    moment = datetime.fromisoformat(cutoff.replace("Z", "+00:00"))
    week = timedelta(days=7)
    assert before - week - timedelta(seconds=1) <= moment <= after - week + timedelta(seconds=1)


def test_a_shrink_over_older_data_is_refused_and_shown_until_allowed(
    apply: Apply, databases: Databases
) -> None:
    count, oldest = _written_long_ago(apply, databases)
    apply.configure(README_HOT)
    before = apply.policies()
    assert before is not None
    assert before["autogen"] == ("0s", "168h0m0s", True)
    oldest_text = datetime.fromtimestamp(oldest // NS, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    oldest_text += f".{oldest % NS:09d}Z"
    place = f'retention policy "{apply.db}"."autogen"'

    for args in [("--dry-run",), (), ("--force",), ("--json",)]:
        started = datetime.now(UTC)
        refused = apply.run(*args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stdout == ""
        message = " ".join(refused.stderr.split())  # the console wraps long lines
        assert (
            f"tier hot: {place}: retention infinite → 7d would delete {count} field value(s) "
            "older than "
        ) in message
        assert f", the oldest at {oldest_text} in measurement 'cpu'" in message
        assert "pass --allow-shrink" in message
        _cutoff_between(message, started, datetime.now(UTC))
        assert apply.policies() == before

    started = datetime.now(UTC)
    planned = apply.changes("--dry-run", "--allow-shrink")
    action, detail = planned["hot"]
    assert action == "shrink"
    assert detail.startswith(
        f"{place}: duration infinite → 7d; deletes {count} field value(s) older than "
    )
    assert detail.endswith(f", the oldest at {oldest_text} in measurement 'cpu'")
    _cutoff_between(detail, started, datetime.now(UTC))
    assert apply.policies() == before

    shrunk = apply.run("--allow-shrink")

    assert shrunk.returncode == 0, shrunk.stderr
    assert "1 tier: 0 created, 0 updated, 1 shrunk (deleting data), 0 unchanged" in shrunk.stdout
    assert apply.policies() == {**before, "autogen": ("168h0m0s", "168h0m0s", True)}


def test_a_shrink_over_no_older_data_is_an_ordinary_update(
    apply: Apply, databases: Databases
) -> None:
    databases.create(apply.db)
    now = int(datetime.now(UTC).timestamp()) * NS
    apply.server.write(
        [f"cpu usage={i}.5 {now - 6 * 86400 * NS + i * NS}" for i in range(3)], db=apply.db
    )
    apply.configure(README_HOT)

    started = datetime.now(UTC)
    action, detail = apply.changes()["hot"]

    assert action == "update"
    assert detail.startswith(
        f'retention policy "{apply.db}"."autogen": duration infinite → 7d (no data older than '
    )
    _cutoff_between(detail, started, datetime.now(UTC))
    policies = apply.policies()
    assert policies is not None
    assert policies["autogen"] == ("168h0m0s", "168h0m0s", True)
