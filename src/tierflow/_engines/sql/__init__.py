"""InfluxDB 3: everything that speaks SQL (DataFusion's dialect) to a 3.x server: the engine,
quoting, the safety checker, the downsample's read-aggregate-write, admin, query templates."""

from tierflow._engines.sql._dialect import DIALECT

__all__ = ["DIALECT"]
