"""Helpers for tierflow's tests, demo and benchmarks; not used by the library itself."""

from tierflow._http import HttpRequest, NetworkError
from tierflow.testing._transport import MockResponse, MockTransport
from tierflow.testing.influxd import InfluxdError, ThrowawayInfluxd

__all__ = [
    "HttpRequest",
    "InfluxdError",
    "MockResponse",
    "MockTransport",
    "NetworkError",
    "ThrowawayInfluxd",
]
