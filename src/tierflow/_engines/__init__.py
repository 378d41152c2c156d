"""Engines: one per query dialect, behind the `Engine` contract."""

from __future__ import annotations

from tierflow._config import ConnectionConfig
from tierflow._engines._base import Engine, Execution, Series
from tierflow._engines.influxql._engine import InfluxQLEngine
from tierflow._metrics import Metrics

__all__ = ["Engine", "Execution", "InfluxQLEngine", "Series", "engine_for"]


def engine_for(name: str, config: ConnectionConfig, metrics: Metrics | None = None) -> Engine:
    """The engine that speaks to a configured connection, behind its retry layer and circuit
    breaker."""
    from tierflow._resilience import ResilientEngine

    inner: Engine
    if config.kind == "influxdb2":
        # Imported here: 1.x users need not load the 2.x engine (and its Flux parser).
        from tierflow._engines.flux._engine import FluxEngine

        inner = FluxEngine(name, config, metrics)
    else:
        inner = InfluxQLEngine(name, config, metrics)
    return ResilientEngine(
        inner,
        name,
        config.retry,
        config.circuit,
        metrics=metrics,
        # A probe is one health check: it takes at most what one request may.
        probe_timeout=config.timeout.total_seconds(),
    )
