"""tierflow's log events as tests see them: a handler of our own on the `tierflow` logger.

Pytest's `caplog` is not enough: another test may have run `configure_logging`, which stops
propagation from the `tierflow` logger to the root. The `events` fixture (`tests/conftest.py`)
yields an `Events` that collects every record at DEBUG and up while the test runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Events:
    """The records logged so far, and their structured fields by event name."""

    records: list[logging.LogRecord] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        """The `tierflow_fields` of each record whose message is `name`, in order."""
        return [
            dict(getattr(record, "tierflow_fields", {}))
            for record in self.records
            if record.getMessage() == name
        ]

    def names(self) -> list[str]:
        """Every record's message (its event name), in order."""
        return [record.getMessage() for record in self.records]


@contextmanager
def captured_events() -> Iterator[Events]:
    """Collect the `tierflow` logger's records at DEBUG and up; restore its level after."""
    seen = Events()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.records.append(record)

    logger = logging.getLogger("tierflow")
    handler, level = Collect(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
