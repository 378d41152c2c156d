"""Engines: one per query dialect, behind the `Engine` contract."""

from __future__ import annotations

from tierflow._config import ConnectionConfig
from tierflow._engines._base import Engine, Execution
from tierflow._engines._influxql import InfluxQLEngine

__all__ = ["Engine", "Execution", "InfluxQLEngine", "engine_for"]


def engine_for(name: str, config: ConnectionConfig) -> Engine:
    """The engine that speaks to a configured connection."""
    return InfluxQLEngine(name, config)
