"""`tierflow apply`: the plan (pure: what the servers hold in, changes and problems out), the
shrink guard, and the InfluxDB 2.x request contract.

The 2.x tests run against `BucketStandIn`: the recording stand-in of the 2.x HTTP API
(`tests/influx2_standin.py`), extended here with `/api/v2/orgs` and a small bucket store behind
`GET`/`POST /api/v2/buckets` and `PATCH /api/v2/buckets/{id}`. It stands in for the *request
contract* only (paths, the org, the `Authorization: Token` header, JSON bodies, status codes,
as InfluxDB 2.x documents them); what a real 2.x server does with a retention rule is not tested
here (no 2.x server can run on these machines). 1.x runs against a real influxd in
`tests/integration/test_apply.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tests.influx2_standin import Answer, StandIn, annotated_csv, rfc3339_nano
from tierflow._apply import (
    Action,
    ApplyRefusedError,
    Change,
    Observed,
    Shrink,
    _oldest_pending,
    apply_tiers,
    blocked_shrinks,
    plan_changes,
)
from tierflow._apply._admin import _directory
from tierflow._config import Config, parse_config
from tierflow._engines.flux._apply import BucketPlace, expiring_flux_script
from tierflow._engines.influxql._apply import Policy, PolicyPlace, Statement, parse_go_duration
from tierflow._runner import Runner
from tierflow._state import MemoryStateStore, Outcome, RunStatus
from tierflow._windows import Window

TOKEN = "secret-token-1"
ORG_ID = "0a0b0c0d0e0f1011"
NOW = datetime(2026, 11, 20, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
AUTOGEN_PLACE = PolicyPlace("plant", "db", "autogen")

__all__ = ["flux_checker"]


def config(
    tiers: Mapping[str, Mapping[str, object]],
    *,
    connection: Mapping[str, object] | None = None,
    jobs: Mapping[str, Mapping[str, object]] | None = None,
    path: Path = Path("/srv/tierflow.toml"),
) -> Config:
    """A config of `tiers` on one connection, `plant` (1.x unless `connection` says otherwise)."""
    raw: dict[str, Any] = {
        "state": {"url": "memory://"},
        "connections": {"plant": connection or {"kind": "influxdb1", "url": "http://127.0.0.1:1"}},
        "tiers": {
            name: body if "archive" in body else {"connection": "plant", **body}
            for name, body in tiers.items()
        },
        "jobs": {
            name: {
                "kind": "downsample",
                "every": "1h",
                "start": NOW - 10 * DAY,
                "measurements": ["cpu"],
                "aggregates": {"usage": ["mean"]},
                **body,
            }
            for name, body in (jobs or {}).items()
        },
    }
    return parse_config(raw, path)


def statements(changes: list[Change]) -> list[str]:
    return [step.text for change in changes for step in change.steps if isinstance(step, Statement)]


def actions(changes: list[Change]) -> dict[str, Action]:
    return {change.tier: change.action for change in changes}


# -- 1.x durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h0m0s", 30 * DAY),
        ("168h0m0s", 7 * DAY),
        ("1h30m0s", timedelta(minutes=90)),
        ("1h0m0.5s", timedelta(hours=1, milliseconds=500)),
        ("500ms", timedelta(milliseconds=500)),
        ("0s", None),
    ],
)
def test_go_durations_as_show_retention_policies_prints_them(
    text: str, expected: timedelta | None
) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30d", "1h 30m", "INF", "-1h0m0s"])
def test_other_text_is_not_a_go_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        parse_go_duration(text)


# -- 1.x plans -----------------------------------------------------------------------------------


def test_a_missing_database_is_made_with_its_default_policy_and_the_named_ones() -> None:
    loaded = config(
        {
            "hot": {"bucket": "db", "retention": "7d"},
            "warm": {"bucket": "db/warm", "retention": "30d", "shard_duration": "1d"},
            "all": {"bucket": "db/all"},
        }
    )
    changes, problems = plan_changes(loaded, Observed(places={("plant", "db"): None}))

    assert problems == []
    assert actions(changes) == {"hot": Action.CREATE, "warm": Action.CREATE, "all": Action.CREATE}
    assert statements(changes) == [
        'CREATE DATABASE "db" WITH DURATION 7d NAME "autogen"',
        'CREATE RETENTION POLICY "warm" ON "db" DURATION 30d REPLICATION 1 SHARD DURATION 1d',
        'CREATE RETENTION POLICY "all" ON "db" DURATION INF REPLICATION 1',
    ]
    assert changes[0].steps[0] == Statement("plant", statements(changes)[0], creates_database=True)


def test_a_missing_database_without_a_default_tier_gets_the_servers_default_policy() -> None:
    loaded = config({"warm": {"bucket": "db/warm", "retention": "30d"}})
    (change,), _ = plan_changes(loaded, Observed(places={("plant", "db"): None}))

    assert [(s.text, s.creates_database) for s in change.steps if isinstance(s, Statement)] == [
        ('CREATE DATABASE "db"', True),
        ('CREATE RETENTION POLICY "warm" ON "db" DURATION 30d REPLICATION 1', False),
    ]
    assert change.detail.startswith('database "db", retention policy "db"."warm"')


def policies(*items: Policy) -> dict[str, Policy]:
    return {policy.name: policy for policy in items}


AUTOGEN_INF = Policy("autogen", None, 7 * DAY, default=True)


def test_the_default_policy_is_held_to_the_tiers_retention_with_a_shard_that_fits() -> None:
    """1.x refuses a duration shorter than the policy's shard duration; an undeclared shard
    duration becomes the server's own default for the new duration."""
    loaded = config({"hot": {"bucket": "db", "retention": "2d"}})
    (change,), problems = plan_changes(
        loaded, Observed(places={("plant", "db"): policies(AUTOGEN_INF)})
    )

    assert problems == []
    assert change.action is Action.UPDATE
    assert statements([change]) == [
        'ALTER RETENTION POLICY "autogen" ON "db" DURATION 2d SHARD DURATION 1d'
    ]
    assert change.shrink == Shrink(("hot",), None, 2 * DAY, AUTOGEN_PLACE)
    assert change.detail == (
        'retention policy "db"."autogen": duration infinite → 2d, shard duration 7d → 1d'
    )


def test_a_policy_as_declared_is_left_alone_and_growing_is_no_shrink() -> None:
    loaded = config(
        {
            "warm": {"bucket": "db/warm", "retention": "30d", "shard_duration": "1d"},
            "cold": {"bucket": "db/cold", "retention": "400d"},
            "any": {"bucket": "db/any"},
        }
    )
    held = policies(
        AUTOGEN_INF,
        Policy("warm", 30 * DAY, DAY, default=False),
        Policy("cold", 200 * DAY, 7 * DAY, default=False),
        Policy("any", 3 * DAY, DAY, default=False),
    )
    changes, problems = plan_changes(loaded, Observed(places={("plant", "db"): held}))

    assert problems == []
    assert actions(changes) == {"warm": Action.NONE, "cold": Action.UPDATE, "any": Action.NONE}
    assert statements(changes) == ['ALTER RETENTION POLICY "cold" ON "db" DURATION 400d']
    assert changes[1].shrink is None


def test_tiers_sharing_a_policy_change_it_once() -> None:
    loaded = config(
        {"a": {"bucket": "db", "retention": "3d"}, "b": {"bucket": "db/autogen", "retention": "3d"}}
    )
    changes, _ = plan_changes(loaded, Observed(places={("plant", "db"): policies(AUTOGEN_INF)}))

    assert actions(changes) == {"a": Action.UPDATE, "b": Action.UPDATE}
    assert len(statements(changes)) == 1
    assert changes[1].detail.endswith("(as for tier a)")
    assert changes[0].shrink == Shrink(("a", "b"), None, 3 * DAY, AUTOGEN_PLACE)


def test_tiers_sharing_a_policy_must_agree() -> None:
    loaded = config(
        {"a": {"bucket": "db", "retention": "3d"}, "b": {"bucket": "db/autogen", "retention": "5d"}}
    )
    _, problems = plan_changes(loaded, Observed(places={("plant", "db"): policies(AUTOGEN_INF)}))

    assert problems == [
        'retention policy "db"."autogen": its tiers disagree about retention: '
        "tier a says 3d, tier b says 5d"
    ]


def test_values_the_server_would_refuse_or_change_are_problems() -> None:
    loaded = config(
        {
            "short": {"bucket": "db/short", "retention": "30m"},
            "shard": {"bucket": "db/shard", "retention": "2h", "shard_duration": "30m"},
            "long": {"bucket": "db/long", "retention": "1d", "shard_duration": "2d"},
        }
    )
    _, problems = plan_changes(loaded, Observed(places={("plant", "db"): None}))

    assert problems == [
        "tier short: retention 30m is below the server's minimum of 1h",
        "tier shard: shard_duration 30m is below the server's minimum of 1h",
        "tier long: shard_duration 2d is longer than retention 1d",
    ]


def test_a_database_without_a_default_policy_cannot_hold_a_default_tier() -> None:
    loaded = config({"hot": {"bucket": "db", "retention": "2d"}, "seen": {"bucket": "db"}})
    held = policies(Policy("warm", None, 7 * DAY, default=False))
    changes, problems = plan_changes(loaded, Observed(places={("plant", "db"): held}))

    assert actions(changes) == {"hot": Action.NONE, "seen": Action.NONE}
    assert len(problems) == 1
    assert problems[0].startswith("tier hot: database 'db' has no default retention policy")


def test_cold_tiers_get_their_directory(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    (tmp_path / "file").write_text("")
    loaded = config(
        {
            "new": {"archive": "archive/new"},
            "there": {"archive": f"file://{tmp_path / 'there'}"},
            "s3": {"archive": "s3://bucket/prefix"},
            "file": {"archive": str(tmp_path / "file")},
        },
        path=tmp_path / "tierflow.toml",
    )
    observed = Observed(
        directories={name: _directory(t.archive or "", loaded) for name, t in loaded.tiers.items()}
    )
    changes, problems = plan_changes(loaded, observed)

    assert actions(changes) == {
        "new": Action.CREATE,
        "there": Action.NONE,
        "s3": Action.NONE,
        "file": Action.NONE,
    }
    assert changes[0].detail == f"directory {tmp_path / 'archive' / 'new'}"
    assert problems == [f"tier file: archive {tmp_path / 'file'} exists and is not a directory"]


# -- the shrink guard ----------------------------------------------------------------------------


def test_a_shrink_is_blocked_by_a_job_whose_oldest_pending_window_would_expire() -> None:
    loaded = config(
        {"hot": {"bucket": "db", "retention": "2d"}, "warm": {"bucket": "db/warm"}},
        jobs={
            "old": {"source": "hot", "dest": "warm"},
            "recent": {"source": "hot", "dest": "warm", "into": "recent_{{ measurement }}"},
            "elsewhere": {"source": "warm", "dest": "hot", "into": "x_{{ measurement }}"},
        },
    )
    shrink = Change("hot", Action.UPDATE, "", shrink=Shrink(("hot",), None, 2 * DAY, AUTOGEN_PLACE))
    windows = {
        "old": Window(NOW - 3 * DAY, NOW - 3 * DAY + HOUR),
        "recent": Window(NOW - DAY, NOW - DAY + HOUR),
        "elsewhere": Window(NOW - 9 * DAY, NOW - 9 * DAY + HOUR),
    }

    problems = blocked_shrinks(loaded, [shrink], windows.get, NOW)

    assert problems == [
        "tier hot: retention infinite → 2d would expire data job old still needs: its oldest "
        "pending window [2026-11-17T00:00:00Z, 2026-11-17T01:00:00Z) starts at or before "
        "2026-11-18T00:00:00Z (now − 2d); let the job catch up first, or pass --force"
    ]
    assert blocked_shrinks(loaded, [shrink], lambda job: None, NOW) == []


async def test_the_oldest_pending_window_counts_parked_ones_and_not_those_max_catchup_skips() -> (
    None
):
    loaded = config(
        {"hot": {"bucket": "db"}, "warm": {"bucket": "db/warm"}},
        jobs={
            "parked": {"source": "hot", "dest": "warm", "start": NOW - 10 * HOUR},
            "skips": {
                "source": "hot",
                "dest": "warm",
                "max_catchup": "3h",
                "into": "skips_{{ measurement }}",
            },
        },
    )
    store = MemoryStateStore()
    runner = Runner(loaded, store)
    first = Window(NOW - 10 * HOUR, NOW - 9 * HOUR)
    rest = [Window(NOW - h * HOUR, NOW - (h - 1) * HOUR) for h in range(9, 0, -1)]
    await store.ensure_job("parked", first.start)
    for windows, status in [([first], RunStatus.FAILED), (rest, RunStatus.SUCCEEDED)]:
        assert await store.claim(
            "parked", windows, run_id="r", started_at=NOW, lease_expires_at=NOW
        )
        outcome = Outcome(status, NOW, 0.0, error="boom" if status is RunStatus.FAILED else None)
        await store.finish("parked", windows, run_id="r", outcome=outcome, park_after=1)

    assert (await runner.plan(NOW, ["parked"]))[0].batches == ()  # parked: not due
    assert await _oldest_pending(runner, "parked", NOW) == first
    assert await _oldest_pending(runner, "skips", NOW) == Window(NOW - 3 * HOUR, NOW - 2 * HOUR)


# -- 2.x: the buckets API ------------------------------------------------------------------------


def _reply(status: int, body: object) -> Answer:
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _server_shard(every: int) -> int:
    """The shard group duration 2.x picks when none is given (as 1.x does)."""
    if every == 0 or every >= 180 * 86400:
        return 7 * 86400
    return 86400 if every >= 2 * 86400 else 3600


@dataclass
class BucketStandIn(StandIn):
    """The recording stand-in, plus an org and a bucket store behind the buckets API."""

    org_id: str = ORG_ID
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rule(self, name: str) -> dict[str, Any]:
        (bucket,) = [b for b in self.stored.values() if b["name"] == name]
        rule: dict[str, Any] = bucket["retentionRules"][0]
        return rule

    def _answer(self, request: web.Request) -> Answer:
        token = request.headers.get("Authorization", "").removeprefix("Token ")
        if self.scripted.get(request.path) or token not in self.tokens:
            return super()._answer(request)
        body = self.requests[-1].body
        match request.method, request.path:
            case "GET", "/api/v2/orgs":
                if request.query.get("org") != self.org:
                    return _reply(404, {"code": "not found", "message": "organization not found"})
                return _reply(200, {"orgs": [{"id": self.org_id, "name": self.org}]})
            case "GET", "/api/v2/buckets":
                org_id = request.query.get("orgID")
                if org_id is None and request.query.get("org") == self.org:
                    org_id = self.org_id  # FluxEngine.bucket_exists asks by org name
                return self._find(org_id, request.query.get("name"))
            case "POST", "/api/v2/buckets":
                return self._create(json.loads(body))
            case "PATCH", path if path.startswith("/api/v2/buckets/"):
                return self._update(path.rsplit("/", 1)[1], json.loads(body))
        return super()._answer(request)

    def _find(self, org_id: str | None, name: str | None) -> Answer:
        found = [b for b in self.stored.values() if b["orgID"] == org_id and b["name"] == name]
        if not found:
            return _reply(404, {"code": "not found", "message": f'bucket "{name}" not found'})
        return _reply(200, {"buckets": found})

    def _create(self, body: dict[str, Any]) -> Answer:
        bucket_id = f"{len(self.stored) + 1:016x}"
        self.stored[bucket_id] = {
            "id": bucket_id,
            "orgID": body["orgID"],
            "name": body["name"],
            "type": "user",
            "retentionRules": [self._rule(body["retentionRules"][0])],
        }
        return _reply(201, self.stored[bucket_id])

    def _update(self, bucket_id: str, body: dict[str, Any]) -> Answer:
        if bucket_id not in self.stored:
            return _reply(404, {"code": "not found", "message": "bucket not found"})
        self.stored[bucket_id]["retentionRules"] = [self._rule(body["retentionRules"][0])]
        return _reply(200, self.stored[bucket_id])

    @staticmethod
    def _rule(rule: dict[str, Any]) -> dict[str, Any]:
        every = int(rule["everySeconds"])
        shard = int(rule.get("shardGroupDurationSeconds") or _server_shard(every))
        return {"type": "expire", "everySeconds": every, "shardGroupDurationSeconds": shard}


@pytest.fixture
async def standin() -> AsyncIterator[BucketStandIn]:
    server = BucketStandIn(tokens={TOKEN})
    await server.start()
    yield server
    await server.stop()


def config2(
    tmp_path: Path,
    url: str,
    tiers: Mapping[str, Mapping[str, object]],
    *,
    org: str = "acme",
    jobs: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    connection = {"kind": "influxdb2", "url": url, "org": org, "token": {"file": str(token)}}
    return config(tiers, connection=connection, jobs=jobs, path=tmp_path / "tierflow.toml")


TIERS2 = {
    "hot": {"bucket": "hot", "retention": "7d"},
    "warm": {"bucket": "warm", "retention": "30d", "shard_duration": "1d"},
    "all": {"bucket": "all"},
}


async def test_missing_buckets_are_created_in_the_connections_org(
    standin: BucketStandIn, tmp_path: Path
) -> None:
    loaded = config2(tmp_path, standin.url, TIERS2)

    changes = await apply_tiers(loaded, now=NOW)

    assert [c.as_json() for c in changes] == [
        {"tier": "hot", "action": "create", "detail": 'bucket "hot" in org "acme": retention 7d'},
        {
            "tier": "warm",
            "action": "create",
            "detail": 'bucket "warm" in org "acme": retention 30d, shard duration 1d',
        },
        {
            "tier": "all",
            "action": "create",
            "detail": 'bucket "all" in org "acme": retention infinite (no retention declared)',
        },
    ]
    assert [(r.method, r.path) for r in standin.requests] == [
        ("GET", "/api/v2/orgs"),
        *[("GET", "/api/v2/buckets")] * 3,
        *[("POST", "/api/v2/buckets")] * 3,
    ]
    assert {r.headers["Authorization"] for r in standin.requests} == {f"Token {TOKEN}"}
    assert standin.requests[0].query == {"org": "acme"}
    assert standin.requests[1].query == {"orgID": ORG_ID, "name": "hot"}
    assert [r.json() for r in standin.requests[4:]] == [
        {
            "orgID": ORG_ID,
            "name": "hot",
            "retentionRules": [{"type": "expire", "everySeconds": 7 * 86400}],
        },
        {
            "orgID": ORG_ID,
            "name": "warm",
            "retentionRules": [
                {"type": "expire", "everySeconds": 30 * 86400, "shardGroupDurationSeconds": 86400}
            ],
        },
        {"orgID": ORG_ID, "name": "all", "retentionRules": [{"type": "expire", "everySeconds": 0}]},
    ]


async def test_a_second_apply_changes_nothing(standin: BucketStandIn, tmp_path: Path) -> None:
    loaded = config2(tmp_path, standin.url, TIERS2)
    await apply_tiers(loaded, now=NOW)
    standin.requests.clear()

    changes = await apply_tiers(loaded, now=NOW)

    assert actions(changes) == {"hot": Action.NONE, "warm": Action.NONE, "all": Action.NONE}
    assert changes[1].detail == (
        'bucket "warm" in org "acme": retention 30d, shard group duration 1d'
    )
    assert {r.method for r in standin.requests} == {"GET"}


async def test_a_changed_retention_is_patched_keeping_the_shard_group_duration(
    standin: BucketStandIn, tmp_path: Path
) -> None:
    await apply_tiers(config2(tmp_path, standin.url, TIERS2), now=NOW)
    standin.requests.clear()
    grown = {**TIERS2, "hot": {"bucket": "hot", "retention": "14d"}}

    changes = await apply_tiers(config2(tmp_path, standin.url, grown), now=NOW)

    assert changes[0].as_json() == {
        "tier": "hot",
        "action": "update",
        "detail": 'bucket "hot" in org "acme": retention 7d → 14d',
    }
    (patch,) = [r for r in standin.requests if r.method == "PATCH"]
    bucket_id = next(i for i, b in standin.stored.items() if b["name"] == "hot")
    assert patch.path == f"/api/v2/buckets/{bucket_id}"
    assert patch.json() == {
        "retentionRules": [
            {"type": "expire", "everySeconds": 14 * 86400, "shardGroupDurationSeconds": 86400}
        ]
    }
    assert standin.rule("hot")["everySeconds"] == 14 * 86400


async def test_a_dry_run_only_reads(standin: BucketStandIn, tmp_path: Path) -> None:
    changes = await apply_tiers(config2(tmp_path, standin.url, TIERS2), now=NOW, dry_run=True)

    assert actions(changes) == dict.fromkeys(TIERS2, Action.CREATE)
    assert {r.method for r in standin.requests} == {"GET"}
    assert standin.stored == {}


async def test_an_unknown_org_refuses_everything(standin: BucketStandIn, tmp_path: Path) -> None:
    loaded = config2(tmp_path, standin.url, TIERS2, org="elsewhere")

    with pytest.raises(ApplyRefusedError, match="the server has no org 'elsewhere'"):
        await apply_tiers(loaded, now=NOW)
    assert [(r.method, r.path, r.query) for r in standin.requests] == [
        ("GET", "/api/v2/orgs", {"org": "elsewhere"})
    ]


async def test_a_shrinking_bucket_is_guarded_then_forced(
    standin: BucketStandIn, tmp_path: Path
) -> None:
    jobs = {"down": {"source": "hot", "dest": "warm", "start": NOW - 5 * DAY}}
    await apply_tiers(config2(tmp_path, standin.url, TIERS2, jobs=jobs), now=NOW)
    shrunk = config2(
        tmp_path, standin.url, {**TIERS2, "hot": {"bucket": "hot", "retention": "2d"}}, jobs=jobs
    )
    standin.requests.clear()

    with pytest.raises(ApplyRefusedError) as refused:
        await apply_tiers(shrunk, now=NOW, store=MemoryStateStore())
    assert "tier hot: retention 7d → 2d would expire data job down still needs" in str(
        refused.value
    )
    assert "[2026-11-15T00:00:00Z, 2026-11-15T01:00:00Z)" in str(refused.value)
    assert changing(standin) == []

    changes = await apply_tiers(shrunk, now=NOW, force=True, store=MemoryStateStore())
    assert changes[0].action is Action.UPDATE
    assert changes[0].shrink == Shrink(("hot",), 7 * DAY, 2 * DAY, BucketPlace("plant", "hot"))
    assert changes[0].detail.endswith("(no data older than 2026-11-18T00:00:00Z)")
    assert standin.rule("hot")["everySeconds"] == 2 * 86400
    # The kept shard group duration (1d) still fits the new retention.
    assert standin.rule("hot")["shardGroupDurationSeconds"] == 86400


# -- 2.x: a shrink over data the bucket holds ----------------------------------------------------


def changing(standin: StandIn) -> list[tuple[str, str]]:
    """The requests that change something (queries are POSTs too, and read only)."""
    return [
        (r.method, r.path)
        for r in standin.requests
        if r.method != "GET" and r.path != "/api/v2/query"
    ]


def older_data(count: int | None, oldest: int | None, measurement: str = "cpu") -> bytes:
    """What a 2.x server answers the expiry script: its `count` and `oldest` results (a result
    with no table when the range is empty)."""
    body = b""
    if count is not None:
        body += annotated_csv([(["_value"], ["long"], [[str(count)]])], group_key=[[]])
        body = body.replace(b"_result", b"count")
    if oldest is not None:
        table = (
            ["_time", "_measurement"],
            ["dateTime:RFC3339", "string"],
            [[rfc3339_nano(oldest), measurement]],
        )
        body += annotated_csv([table], group_key=[[]]).replace(b"_result", b"oldest")
    return body


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bucket=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12))
def test_the_expiry_script_type_checks_and_counts_the_bucket_up_to_the_cutoff(
    flux_checker: FluxChecker, bucket: str
) -> None:
    cutoff = datetime(2026, 11, 13, 0, 0, 0, 500, tzinfo=UTC)
    script = expiring_flux_script(bucket, cutoff)

    assert flux_checker.is_valid(script), script
    tree = flux_checker.ast(script)
    assert string_literals(tree) == [bucket, "count", "_time", "_measurement", "_time", "oldest"]
    (ranged,) = [
        n
        for n in walk(tree)
        if n["type"] == "CallExpression" and n["callee"].get("name") == "range"
    ]
    arguments = {p["key"]["name"]: p["value"] for p in ranged["arguments"][0]["properties"]}
    assert (arguments["start"]["type"], arguments["start"]["value"]) == ("IntegerLiteral", "0")
    assert arguments["stop"]["type"] == "DateTimeLiteral"
    assert datetime.fromisoformat(arguments["stop"]["value"]) == cutoff


async def test_a_bucket_shrink_over_older_data_is_refused_then_allowed(
    standin: BucketStandIn, tmp_path: Path
) -> None:
    await apply_tiers(config2(tmp_path, standin.url, TIERS2), now=NOW)
    oldest = int((NOW - 30 * DAY).timestamp()) * 1_000_000_000 + 7
    standin.on_query = lambda script: older_data(123, oldest)
    shrunk = config2(tmp_path, standin.url, {**TIERS2, "all": {"bucket": "all", "retention": "7d"}})
    standin.requests.clear()

    for dry_run in (False, True):
        with pytest.raises(ApplyRefusedError) as refused:
            await apply_tiers(shrunk, now=NOW, dry_run=dry_run, force=True)
        assert (
            'tier all: bucket "all": retention infinite → 7d would delete 123 field value(s) '
            "older than 2026-11-13T00:00:00Z, the oldest at 2026-10-21T00:00:00.000000007Z in "
            "measurement 'cpu'"
        ) in str(refused.value)
        assert "pass --allow-shrink" in str(refused.value)
    assert changing(standin) == []  # --force is not enough
    assert standin.rule("all")["everySeconds"] == 0
    (query,) = {r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"}
    assert query == expiring_flux_script("all", NOW - 7 * DAY)
    assert {r.query["org"] for r in standin.requests if r.path == "/api/v2/query"} == {"acme"}

    planned = await apply_tiers(shrunk, now=NOW, dry_run=True, allow_shrink=True)
    assert changing(standin) == []
    changes = await apply_tiers(shrunk, now=NOW, allow_shrink=True)

    assert planned == changes
    assert changes[2].as_json() == {
        "tier": "all",
        "action": "shrink",
        "detail": 'bucket "all" in org "acme": retention infinite → 7d; deletes 123 field '
        "value(s) older than 2026-11-13T00:00:00Z, the oldest at "
        "2026-10-21T00:00:00.000000007Z in measurement 'cpu'",
    }
    bucket_id = next(i for i, b in standin.stored.items() if b["name"] == "all")
    assert changing(standin) == [("PATCH", f"/api/v2/buckets/{bucket_id}")]
    assert standin.rule("all")["everySeconds"] == 7 * 86400


async def test_a_bucket_shrink_over_no_older_data_is_an_update_saying_so(
    standin: BucketStandIn, tmp_path: Path
) -> None:
    await apply_tiers(config2(tmp_path, standin.url, TIERS2), now=NOW)
    standin.on_query = lambda script: older_data(None, None)
    shrunk = config2(tmp_path, standin.url, {**TIERS2, "all": {"bucket": "all", "retention": "7d"}})

    changes = await apply_tiers(shrunk, now=NOW)

    assert changes[2].as_json() == {
        "tier": "all",
        "action": "update",
        "detail": 'bucket "all" in org "acme": retention infinite → 7d '
        "(no data older than 2026-11-13T00:00:00Z)",
    }
    assert standin.rule("all")["everySeconds"] == 7 * 86400
