"""The engine contract: one narrow interface per query dialect."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from tierflow._templates import RenderedQuery

__all__ = ["Engine", "Execution"]


@dataclass(frozen=True, slots=True)
class Execution:
    """What a query did on the server."""

    points_written: int
    bytes_sent: int
    bytes_received: int


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
    async def ping(self) -> None:
        """Raise an `EngineError` unless the server answers its health check."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. The engine may not be used afterwards."""
