"""Engines: one package per query dialect, behind the `Engine` contract, found by the registry.

`KINDS` maps a connection's `kind` to the package that serves it; each package exposes its
`Dialect` as `DIALECT` (the static side: templates, quoting, checks) and makes its engine. A
package is imported only when a connection of its kind is used, so the 2.x client stays out of a
1.x deployment. Adding an engine is one new package and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tierflow._engines._base import Engine, Execution, Series
from tierflow._engines._dialect import Capabilities, Dialect
from tierflow._engines.influxql._engine import InfluxQLEngine

if TYPE_CHECKING:
    from tierflow._config import ConnectionConfig
    from tierflow._metrics import Metrics

__all__ = [
    "KINDS",
    "Capabilities",
    "Dialect",
    "Engine",
    "Execution",
    "InfluxQLEngine",
    "Series",
    "dialect_for",
    "dialect_named",
    "dialects",
    "engine_for",
]

#: connection kind → the package that speaks to it.
KINDS: dict[str, str] = {
    "influxdb1": "tierflow._engines.influxql",
    "influxdb2": "tierflow._engines.flux",
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
