"""Helpers for tierflow's tests, demo and benchmarks; not used by the library itself.

`tierflow.testing.state_contract` (imported on its own: it needs pytest) holds the tests every
state store must pass, as a base class to subclass."""

from tierflow.testing.influxd import InfluxdError, ThrowawayInfluxd

__all__ = ["InfluxdError", "ThrowawayInfluxd"]
