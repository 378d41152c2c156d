"""Helpers for tierflow's tests, demo and benchmarks; not used by the library itself.

`tierflow.testing.state_contract` (imported on its own: it needs pytest) holds the tests every
state store must pass, as a base class to subclass."""

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
