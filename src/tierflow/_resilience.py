"""Riding out transient faults: one retry layer and one circuit breaker per connection, around
every engine call.

Each engine decides which of its errors are transient (`EngineError.transient`) and passes on the
server's `Retry-After`; this module decides what to do about it:

- retry transient failures with exponential backoff and full jitter (`initial × 2^n`, capped at
  `max`, a uniform random share of that), honouring `Retry-After`, never sleeping past the
  `deadline` and never past `attempts`;
- after `failures` transient failures in a row, open the connection's circuit: calls fail fast
  with `CircuitOpenError` (nothing is sent) until `cooldown` has passed, when a single probe (the
  engine's health check) decides whether to close it.

Retrying is safe because every operation tierflow sends is idempotent: a downsample or a write
puts the same series at the same timestamps, a delete removes the same range, a read reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from tierflow._config import CircuitConfig, RetryConfig
from tierflow._engines._base import Engine, Execution, Series
from tierflow._errors import EngineError
from tierflow._logging import log_event
from tierflow._metrics import Metrics
from tierflow._templates import DeleteRange, RenderedQuery

__all__ = ["CircuitBreaker", "CircuitOpenError", "CircuitState", "ResilientEngine"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


class CircuitOpenError(EngineError):
    """The connection's circuit is open: the call was not sent. Not retried now (that is the
    point); the window stays due and runs once the circuit closes."""


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE_VALUE = {CircuitState.CLOSED: 0, CircuitState.OPEN: 1, CircuitState.HALF_OPEN: 2}


class CircuitBreaker:
    """A per-connection circuit breaker: closed → (failures in a row) → open → (cooldown, one
    probe) → closed, or open again if the probe fails."""

    def __init__(
        self,
        connection: str,
        config: CircuitConfig,
        probe: Callable[[], Awaitable[None]],
        *,
        metrics: Metrics | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.connection = connection
        self.config = config
        self._probe = probe
        self._metrics = metrics
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at = 0.0
        self._last_error = ""
        self._probing = asyncio.Lock()
        self.state = CircuitState.CLOSED
        self._publish()

    async def guard(self) -> None:
        """Raise CircuitOpenError unless a call may go out now."""
        if self.state is CircuitState.CLOSED:
            return
        if self._monotonic() - self._opened_at < self.config.cooldown.total_seconds():
            raise self._refusal()
        if self._probing.locked():
            raise self._refusal()  # another caller is probing: don't pile on
        async with self._probing:
            self._move(CircuitState.HALF_OPEN, "cooldown over, probing")
            try:
                await self._probe()
            except EngineError as exc:
                self._last_error = str(exc)
                self._open(f"probe failed: {exc}")
                raise self._refusal() from None
            self._close("probe succeeded")

    def record_success(self) -> None:
        self._failures = 0
        if self.state is not CircuitState.CLOSED:
            self._close("a call succeeded")

    def record_failure(self, error: EngineError) -> None:
        """Count a transient failure; permanent ones say nothing about the server's health."""
        if not error.transient:
            return
        self._failures += 1
        self._last_error = str(error)
        if self.state is CircuitState.CLOSED and self._failures >= self.config.failures:
            self._open(f"{self._failures} transient failures in a row")

    def _refusal(self) -> CircuitOpenError:
        remaining = self.config.cooldown.total_seconds() - (self._monotonic() - self._opened_at)
        return CircuitOpenError(
            f"connection {self.connection}: circuit open, nothing sent (next probe in "
            f"{max(remaining, 0):.0f}s); last failure: {self._last_error}"
        )

    def _open(self, why: str) -> None:
        self._opened_at = self._monotonic()
        self._move(CircuitState.OPEN, why)

    def _close(self, why: str) -> None:
        self._failures = 0
        self._move(CircuitState.CLOSED, why)

    def _move(self, state: CircuitState, why: str) -> None:
        if state is not self.state:
            log_event(
                f"circuit_{state.value}",
                level=logging.WARNING if state is CircuitState.OPEN else logging.INFO,
                connection=self.connection,
                reason=why,
            )
        self.state = state
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.circuit_state.labels(self.connection).set(_STATE_VALUE[self.state])


def _transient(error: BaseException) -> bool:
    return isinstance(error, EngineError) and error.transient


class _Backoff:
    """Full-jitter exponential backoff that honours Retry-After, for tenacity's `wait`."""

    def __init__(self, config: RetryConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng

    def __call__(self, state: RetryCallState) -> float:
        ceiling = min(
            self.config.max.total_seconds(),
            self.config.initial.total_seconds() * 2 ** (state.attempt_number - 1),
        )
        delay = self.rng.uniform(0, ceiling)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, EngineError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


class ResilientEngine(Engine):
    """Wraps an engine: each call goes through the connection's circuit breaker and retry layer."""

    def __init__(
        self,
        inner: Engine,
        connection: str,
        retry: RetryConfig,
        circuit: CircuitConfig,
        *,
        metrics: Metrics | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.connection = connection
        self.retry = retry
        self.metrics = metrics
        self._sleep = sleep
        self._backoff = _Backoff(retry, rng or random.Random())
        self.breaker = CircuitBreaker(
            connection, circuit, inner.ping, metrics=metrics, monotonic=monotonic
        )

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        return await self._call(lambda: self.inner.execute(query, database=database))

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        return await self._call(lambda: self.inner.query(text, database=database))

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        # Safe to retry: the same points at the same timestamps overwrite themselves.
        return await self._call(
            lambda: self.inner.write(body, database=database, retention_policy=retention_policy)
        )

    def query_chunks(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[list[Series]]:
        # Like `stream`: a result half read cannot be retried here; its window is re-run.
        return self.inner.query_chunks(text, database=database, chunk_size=chunk_size)

    def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        # A stream half consumed cannot be retried here; the window that reads it is re-run.
        return self.inner.stream(text, database=database, chunk_size=chunk_size)

    async def delete(self, target: DeleteRange) -> None:
        # Safe to retry: deleting a range twice leaves it as deleting it once.
        await self._call(lambda: self.inner.delete(target))

    async def ping(self) -> None:
        """The health check itself: straight to the server, whatever the circuit says."""
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts)
            | stop_before_delay(self.retry.deadline.total_seconds()),
            wait=self._backoff,
            # Once the circuit is open, waiting to try again is pointless: give up at once.
            retry=retry_if_exception(
                lambda error: _transient(error) and self.breaker.state is CircuitState.CLOSED
            ),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.breaker.guard()
                try:
                    result = await call()
                except EngineError as exc:
                    self.breaker.record_failure(exc)
                    raise
                self.breaker.record_success()
                return result
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if self.metrics is not None:
            self.metrics.query_retries.labels(self.connection).inc()
        log_event(
            "query_retry",
            level=logging.WARNING,
            connection=self.connection,
            attempt=state.attempt_number,
            sleep_s=round(state.upcoming_sleep, 3),
            error=str(error),
        )
