"""The StateStore contract (`tierflow.testing.state_contract`), run against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tierflow._state import MemoryStateStore, SqliteStateStore, StateStore
from tierflow.testing.state_contract import StateStoreContract


class TestMemoryStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[StateStore]:
        async with MemoryStateStore() as made:
            yield made


class TestSqliteStateStore(StateStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        async with SqliteStateStore(tmp_path / "s.db") as made:
            yield made
