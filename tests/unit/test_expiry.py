"""The expiry guard: windows whose source data expires before they run are reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.fakes import FakeEngine
from tierflow._config import Config, parse_config
from tierflow._errors import QueryError
from tierflow._runner import Runner
from tierflow._state import MemoryStateStore

START = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def config(retention: str | None, **tier: Any) -> Config:
    hot: dict[str, Any] = {"connection": "plant", "bucket": "raw/autogen", **tier}
    if retention is not None:
        hot["retention"] = retention
    return parse_config(
        {
            "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
            "tiers": {"hot": hot, "warm": {"connection": "plant", "bucket": "raw/warm"}},
            "jobs": {
                "cpu": {
                    "kind": "downsample",
                    "source": "hot",
                    "dest": "warm",
                    "measurements": ["cpu"],
                    "every": "1h",
                    "start": START,
                    "aggregates": {"usage": ["mean"]},
                }
            },
        },
        Path("t.toml"),
    )


def runner(cfg: Config, engine: FakeEngine | None = None) -> Runner:
    return Runner(cfg, MemoryStateStore(), engines={"plant": engine or FakeEngine()})


async def test_no_retention_no_risk() -> None:
    (status,) = await runner(config(None)).status(START + 1000 * H)
    assert (status.expiry_risk, status.windows_at_risk, status.windows_lost) == (False, 0, 0)


async def test_windows_inside_the_margin_are_at_risk_and_past_retention_lost() -> None:
    # Retention 100h, margin 10h (a tenth). At now = START + 105h the pending windows start at
    # 0h..104h: those starting before now - 100h (0..4) are lost, those before now - 90h
    # (0..14) are at risk.
    (status,) = await runner(config("100h")).status(START + 105 * H)
    assert (status.expiry_risk, status.windows_at_risk, status.windows_lost) == (True, 15, 5)


async def test_the_margin_is_at_least_an_hour_or_as_configured() -> None:
    # Retention 2h: a tenth is 12 min, so the margin is 1 h. At now = 5h windows 0..4 are due;
    # lost before 3h (0, 1, 2), at risk before 4h (0..3).
    (status,) = await runner(config("2h")).status(START + 5 * H)
    assert (status.windows_at_risk, status.windows_lost) == (4, 3)
    (status,) = await runner(config("2h", expiry_margin="2h")).status(START + 5 * H)
    assert (status.windows_at_risk, status.windows_lost) == (5, 3)


async def test_windows_done_are_not_at_risk_and_failures_are() -> None:
    engine = FakeEngine(failures={3: QueryError("no")})  # one window per query: window 3 fails
    run = runner(config("100h"), engine)
    now = START + 105 * H
    await run.run_due(now)
    (status,) = await run.status(now)
    # Only window 3 failed; it started 102h ago: past retention, lost, and still reported.
    assert (status.expiry_risk, status.windows_at_risk, status.windows_lost) == (True, 1, 1)
    value = run.metrics.registry.get_sample_value("tierflow_windows_at_risk", {"job": "cpu"})
    assert value == 1
