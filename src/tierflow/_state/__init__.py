"""State stores: where watermarks, the run ledger and the history live."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow._errors import ConfigError
from tierflow._state._base import (
    DEFAULT_KEEP_HISTORY,
    Attempt,
    Census,
    Claim,
    JobDefinition,
    LedgerEntry,
    LedgerRange,
    Outcome,
    RunStatus,
    StateStore,
)
from tierflow._state._holder import Holder
from tierflow._state._memory import MemoryStateStore
from tierflow._state._sqlite import SqliteStateStore
from tierflow._state._worker import Worker, WorkerState

if TYPE_CHECKING:
    from tierflow._secrets import SecretSource
    from tierflow._state._postgres import PostgresStateStore

__all__ = [
    "Attempt",
    "Census",
    "Claim",
    "Holder",
    "JobDefinition",
    "LedgerEntry",
    "LedgerRange",
    "MemoryStateStore",
    "Outcome",
    "PostgresStateStore",
    "RunStatus",
    "SqliteStateStore",
    "StateStore",
    "Worker",
    "WorkerState",
    "open_state_store",
]


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def __getattr__(name: str) -> Any:
    # psycopg is an optional extra, imported only when a PostgreSQL store is asked for.
    if name == "PostgresStateStore":
        from tierflow._state._postgres import PostgresStateStore

        return PostgresStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_state_store(
    url: str,
    *,
    password: SecretSource | None = None,
    keep_history: timedelta | None = DEFAULT_KEEP_HISTORY,
) -> StateStore:
    """Open the store a URL names: `sqlite:///relative.db`, `sqlite:////absolute.db`, `memory://`,
    `postgresql://user@host/db` (its password from `password`, a secret source, or libpq's
    PGPASSWORD and ~/.pgpass; a PostgreSQL store connects on first use). It keeps finished
    attempts in the history for `keep_history` (None: for good)."""
    if url.startswith(_POSTGRES_SCHEMES):
        return _postgres_store(url, password, keep_history)
    if url == "memory://":
        return MemoryStateStore(keep_history=keep_history)
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
        return SqliteStateStore(path, keep_history=keep_history)
    raise ConfigError(
        f"state url {url!r} is not supported; use sqlite:///path/to/file.db, "
        "postgresql://user@host/db or memory://"
    )


def _postgres_store(
    url: str, password: SecretSource | None, keep_history: timedelta | None
) -> StateStore:
    try:
        from tierflow._state._postgres import PostgresStateStore
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// state url needs psycopg: pip install 'tierflow[postgres]'"
        ) from exc
    return PostgresStateStore(url, password=password, keep_history=keep_history)
