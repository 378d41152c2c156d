"""What the benchmarks share: the `--stores` option, the load-average warning, and a fresh state
store for each run. Imported by the scripts next to it (`python bench/NAME.py` puts bench/ first
on the path)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

__all__ = ["StateStores", "load_average", "stores_option"]


def stores_option(parser: argparse.ArgumentParser, value: str, known: Sequence[str]) -> list[str]:
    """The stores `--stores` names (comma-separated); one not in `known` is a usage error."""
    stores = [s.strip() for s in value.split(",") if s.strip()]
    if unknown := sorted(set(stores) - set(known)):
        parser.error(f"unknown store {unknown[0]!r}; known: {', '.join(known)}")
    return stores


def load_average(effect: str) -> float:
    """The load average before the run, with a warning when the machine is busy: other work on
    it `effect` (what that does to this bench's numbers)."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run; other work on this machine "
              f"{effect}")  # fmt: skip
    return load


class StateStores:
    """A fresh state for each run: memory, a SQLite file in the run's directory, or a new
    database on one PostgreSQL (started only when `names` has it)."""

    def __init__(self, stack: ExitStack, names: Sequence[str]) -> None:
        self.postgres: Any = None
        if "postgresql" in names:
            from tierflow.testing.postgres import ThrowawayPostgres

            self.postgres = stack.enter_context(ThrowawayPostgres())

    def fresh(self, store: str, directory: Path) -> str:
        if store == "memory":
            return "memory://"
        if store == "sqlite":
            return f"sqlite:///{directory / 'state.db'}"
        return str(self.postgres.new_database("tierflow_bench"))

    def drop(self, store: str, url: str) -> None:
        if store == "postgresql":
            self.postgres.drop_database(url)
