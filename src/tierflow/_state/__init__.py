"""State stores: where watermarks, the run ledger and the history live."""

from __future__ import annotations

from pathlib import Path

from tierflow._errors import ConfigError
from tierflow._state._base import (
    Attempt,
    Census,
    Claim,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    StateStore,
)
from tierflow._state._holder import Holder
from tierflow._state._memory import MemoryStateStore
from tierflow._state._sqlite import SqliteStateStore

__all__ = [
    "Attempt",
    "Census",
    "Claim",
    "Holder",
    "JobDefinition",
    "LedgerEntry",
    "MemoryStateStore",
    "Outcome",
    "RunStatus",
    "SqliteStateStore",
    "StateStore",
    "open_state_store",
]


def open_state_store(url: str) -> StateStore:
    """Open the store a URL names: `sqlite:///relative.db`, `sqlite:////absolute.db`, `memory://`."""
    if url == "memory://":
        return MemoryStateStore()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.name:
            raise ConfigError(f"state url {url!r} names no file")
        if not path.parent.exists():
            # SQLite would say only "unable to open database file". (A parent that is a file
            # is left to SQLite's StateError.)
            raise ConfigError(
                f"state url {url!r}: directory {path.parent} does not exist; create it or "
                "point [state] url (or TIERFLOW_STATE) elsewhere"
            )
        return SqliteStateStore(path)
    raise ConfigError(
        f"state url {url!r} is not supported; use sqlite:///path/to/file.db or memory://"
    )
