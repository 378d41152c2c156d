"""Engines: one package per query dialect, behind two contracts, found by the registry.

- `Engine` (`_base.py`): one connection's primitive requests (execute, query, write, delete,
  ping), each failure an `EngineError` the engine marks transient or not. `engine_for` wraps it
  in `ResilientEngine` (the connection's retries and circuit breaker).
- `Dialect` (`_dialect.py`): the language. Its templates, quoting filters and safety checker; what
  it declares it can do (`Capabilities`, checked by config validation before anything runs); and
  the operations composed over an engine's primitives that yield typed data (`PointBatch`es for
  archive exports and relay reads, per-field counts for the archive's checks, field types,
  `tierflow apply`'s admin).

`KINDS` maps a connection's `kind` to the package that serves it; each package exposes its
`Dialect` as `DIALECT` and makes its engine. A package is imported only when a connection of its
kind is used. Adding an engine is one new package and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tierflow._engines._base import Engine, Execution, Series
from tierflow._engines._dialect import (
    AggregateRead,
    Capabilities,
    Dialect,
    TierAdmin,
    WindowExport,
)
from tierflow._engines.influxql._engine import InfluxQLEngine

if TYPE_CHECKING:
    from tierflow._config import ConnectionConfig
    from tierflow._metrics import Metrics

__all__ = [
    "KINDS",
    "AggregateRead",
    "Capabilities",
    "Dialect",
    "Engine",
    "Execution",
    "InfluxQLEngine",
    "Series",
    "TierAdmin",
    "WindowExport",
    "dialect_for",
    "dialect_named",
    "dialects",
    "engine_for",
]

#: connection kind → the package that speaks to it.
KINDS: dict[str, str] = {
    "influxdb1": "tierflow._engines.influxql",
    "influxdb2": "tierflow._engines.flux",
    "influxdb3": "tierflow._engines.sql",
}


def dialect_for(connection: ConnectionConfig | str) -> Dialect:
    """The dialect of a connection (or of a connection `kind`)."""
    kind = connection if isinstance(connection, str) else connection.kind
    dialect: Dialect = importlib.import_module(KINDS[kind]).DIALECT
    return dialect


def dialects() -> list[Dialect]:
    """Every registered dialect, in registry order."""
    return [dialect_for(kind) for kind in KINDS]


def dialect_named(name: str) -> Dialect:
    """The dialect whose language is `name` (`influxql`, `flux`): what a rendered query or an
    engine records."""
    for dialect in dialects():
        if dialect.name == name:
            return dialect
    raise KeyError(name)


def engine_for(name: str, config: ConnectionConfig, metrics: Metrics | None = None) -> Engine:
    """The engine that speaks to a configured connection, behind its retry layer and circuit
    breaker."""
    from tierflow._resilience import ResilientEngine

    return ResilientEngine(
        dialect_for(config).make_engine(name, config, metrics),
        name,
        config.retry,
        config.circuit,
        metrics=metrics,
        # A probe is one health check: it takes at most what one request may.
        probe_timeout=config.timeout.total_seconds(),
    )
