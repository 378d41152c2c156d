"""The engine contract: one narrow interface per query dialect."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tierflow._errors import EngineError
from tierflow._http import (
    KnownError,
    describe_failure,
    recognise,
    retry_after_seconds,
    with_fix,
)
from tierflow._templates import DeleteRange, RenderedQuery

__all__ = [
    "MISSING_TARGET_FIX",
    "Engine",
    "Execution",
    "KnownError",
    "Series",
    "describe_failure",
    "recognise",
    "retry_after_seconds",
    "with_fix",
]

#: What to do about a database, retention policy or bucket that does not exist.
MISSING_TARGET_FIX = "create it with `tierflow apply`"


@dataclass(frozen=True, slots=True)
class Execution:
    """What a query did on the server."""

    points_written: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a read query's result: its tags and its rows."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


class Engine(ABC):
    """Runs rendered queries against one connection.

    Templates and window logic stay outside: an engine sends text and reports what happened.
    Every failure is raised as an `EngineError`, and the engine alone decides whether it is
    transient (worth retrying) or permanent.
    """

    dialect: str

    @abstractmethod
    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        """Run a query that writes on the server (e.g. `SELECT … INTO`)."""

    @abstractmethod
    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        """Run a small read query and return its series (for checks and fingerprints: results
        are held in memory, so this is not the export path)."""

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """Write line protocol (nanosecond timestamps); return the bytes sent. A refusal of any
        part raises: a batch is never dropped silently."""
        raise EngineError(f"{type(self).__name__} cannot write line protocol yet")

    async def query_chunks(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[list[Series]]:
        """Run a read query and yield its series a chunk at a time (at most about `chunk_size`
        rows each; a series may span chunks), so a large result is never held whole. By
        default one chunk: the whole `query` result."""
        yield await self.query(text, database=database)

    def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        """Run a read query and yield its CSV body in pieces as they arrive (the export path;
        the CSV dialect is the engine's own)."""
        raise EngineError(f"{type(self).__name__} cannot stream query results yet")

    async def delete(self, target: DeleteRange) -> None:
        """Delete `[start, stop)` of one measurement (narrowed by tags) from a bucket: what
        `replace = true` does before a window is written again."""
        raise EngineError(f"{type(self).__name__} cannot delete a window")

    @abstractmethod
    async def ping(self) -> None:
        """Raise an `EngineError` unless the server answers its health check."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. The engine may not be used afterwards."""
