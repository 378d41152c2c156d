"""InfluxDB 2.x: everything that speaks Flux (the engine, annotated CSV, exports, literals,
syntax, query templates)."""

from tierflow._engines.flux._dialect import DIALECT

__all__ = ["DIALECT"]
