"""Helpers for tierflow's tests, demo and benchmarks; not used by the library itself."""

from tierflow.testing.influxd import InfluxdError, ThrowawayInfluxd

__all__ = ["InfluxdError", "ThrowawayInfluxd"]
