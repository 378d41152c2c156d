"""InfluxDB 1.x: everything that speaks InfluxQL (the engine, exports, query templates)."""

from tierflow._engines.influxql._dialect import DIALECT

__all__ = ["DIALECT"]
