"""Test doubles for unit tests: an `Engine` that records what it is asked to run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tierflow._engines import Engine, Execution, Series
from tierflow._errors import EngineError
from tierflow._templates import RenderedQuery

__all__ = ["FakeCall", "FakeEngine"]


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One `execute` call as the engine received it."""

    query: RenderedQuery
    database: str | None


class FakeEngine(Engine):
    """Records every query; raises the exception scripted for a call number (0-based, counted
    over every `execute` call this engine has received), otherwise reports `points` written.
    Read queries (`query`) are recorded in `reads` and answer `series`."""

    def __init__(
        self, *, failures: Mapping[int, BaseException] | None = None, points: int = 0
    ) -> None:
        self.calls: list[FakeCall] = []
        self.failures: dict[int, BaseException] = dict(failures or {})
        self.points = points
        self.closed = False
        self.reads: list[tuple[str, str | None]] = []
        self.series: list[Series] = []

    def fail_on(self, call: int, error: BaseException) -> None:
        """Make the `call`-th execute (0-based, over the engine's lifetime) raise `error`."""
        self.failures[call] = error

    @property
    def queries(self) -> list[RenderedQuery]:
        return [call.query for call in self.calls]

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        if self.closed:
            raise EngineError("fake engine used after aclose()")
        number = len(self.calls)
        self.calls.append(FakeCall(query, database))
        if (error := self.failures.get(number)) is not None:
            raise error
        return Execution(self.points, len(query.text.encode()), 0)

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        if self.closed:
            raise EngineError("fake engine used after aclose()")
        self.reads.append((text, database))
        return list(self.series)

    async def ping(self) -> None:
        if self.closed:
            raise EngineError("fake engine used after aclose()")

    async def aclose(self) -> None:
        self.closed = True
