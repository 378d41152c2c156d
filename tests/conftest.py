"""Fixtures shared by the unit and the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.events import Events, captured_events


@pytest.fixture
def events() -> Iterator[Events]:
    """tierflow's log events during the test (see `tests.events`)."""
    with captured_events() as seen:
        yield seen
