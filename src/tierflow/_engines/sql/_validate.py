"""`validate --online` for InfluxDB 3 connections (skeleton; filled in by the next commits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflow._config import Config
    from tierflow._engines._base import Engine
    from tierflow._validation import Problem

__all__ = ["check_influxdb3"]


async def check_influxdb3(
    engine: Engine, config: Config, name: str, problems: list[Problem]
) -> None:
    """Append what the 3.x server of connection `name` says is wrong."""
    return
