"""Riding out transient faults: one retry layer and one circuit breaker per connection, around
every engine call.

Each engine decides which of its errors are transient (`EngineError.transient`) and passes on the
server's `Retry-After`; this module decides what to do about it:

- retry transient failures with exponential backoff and full jitter (`initial × 2^n`, capped at
  `max`, a uniform random share of that), honouring `Retry-After`, never sleeping past the
  `deadline` and never past `attempts`;
- after `failures` transient failures in a row, open the connection's circuit: nothing is sent
  until `cooldown` has passed, when a single probe (the engine's health check) decides whether
  to close it. A caller that meets the open circuit waits for that probe's verdict if the verdict
  can come before its own deadline and within one retry deadline of the first failure in the
  row (the outage's `patience`); otherwise it fails at once with `CircuitOpenError`. So a blip
  (a few failures, the server back within the cool-down) costs a wait, not failed windows; and a
  dead server costs at most one retry deadline before everything fails fast, however many
  windows are due.

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
from tierflow._engines._dialect import Dialect
from tierflow._errors import CircuitOpenError, EngineError
from tierflow._logging import log_event
from tierflow._metrics import Metrics
from tierflow._templates import DeleteRange, RenderedQuery
from tierflow._tracing import retry_event

__all__ = ["CircuitBreaker", "CircuitOpenError", "CircuitState", "ResilientEngine"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE_VALUE = {CircuitState.CLOSED: 0, CircuitState.OPEN: 1, CircuitState.HALF_OPEN: 2}


class CircuitBreaker:
    """A per-connection circuit breaker: closed → (failures in a row) → open → (cooldown, one
    probe) → closed, or open again if the probe fails.

    `patience` (seconds, the retry deadline) bounds how long after the first failure of a row
    callers may still wait for a probe; `probe_timeout` (the connection's timeout) is how long a
    probe may take, so a caller waits only for a verdict that can come in time. With neither,
    an open circuit refuses at once."""

    def __init__(
        self,
        connection: str,
        config: CircuitConfig,
        probe: Callable[[], Awaitable[None]],
        *,
        patience: float = 0.0,
        probe_timeout: float = 0.0,
        metrics: Metrics | None = None,
        monotonic: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.connection = connection
        self.config = config
        self.patience = patience
        self.probe_timeout = probe_timeout
        self._probe = probe
        self._metrics = metrics
        self._monotonic = monotonic
        self._sleep = sleep
        self._failures = 0
        self._streak_began = 0.0
        self._opened_at = 0.0
        self._last_error = ""
        self._probing: asyncio.Future[bool] | None = None
        self._probe_started = 0.0
        self.state = CircuitState.CLOSED
        self._publish()

    async def guard(self, deadline: float | None = None) -> None:
        """Return when a call may go out; raise CircuitOpenError when it may not and the caller
        (whose `deadline` is on this breaker's clock; None: it cannot wait) cannot wait for a
        probe's verdict."""
        mine = False  # the caller that starts a probe waits for it, whatever its deadline
        while self.state is not CircuitState.CLOSED:
            verdict = self._probing
            if verdict is None:
                wait = self._probe_at() - self._monotonic()
                if wait > 0:
                    if not self._may_wait(self._probe_at(), deadline):
                        raise self._refusal()
                    await self._sleep(wait)
                    continue
                verdict, mine = self._start_probe(), True
            elif not (mine or self._may_wait(self._probe_started, deadline)):
                raise self._refusal()  # another caller's probe is in flight: don't pile on
            # Shielded: a caller that gives up must not cancel the verdict others wait for.
            await asyncio.shield(verdict)
            mine = False

    def admits(self, deadline: float) -> bool:
        """Whether a caller that just failed should try again: the circuit is closed, or the
        caller would wait for (or itself run) a probe whose verdict can come in time."""
        if self.state is CircuitState.CLOSED:
            return True
        if self._probing is not None:
            return self._may_wait(self._probe_started, deadline)
        at = self._probe_at()
        return at <= self._monotonic() or self._may_wait(at, deadline)

    def record_success(self) -> None:
        self._failures = 0
        if self.state is not CircuitState.CLOSED:
            self._close("a call succeeded")

    def record_failure(self, error: EngineError) -> None:
        """Count a transient failure; permanent ones say nothing about the server's health."""
        if not error.transient:
            return
        if self._failures == 0:
            self._streak_began = self._monotonic()
        self._failures += 1
        self._last_error = str(error)
        if self.state is CircuitState.CLOSED and self._failures >= self.config.failures:
            self._open(f"{self._failures} transient failures in a row")

    def _probe_at(self) -> float:
        return self._opened_at + self.config.cooldown.total_seconds()

    def _may_wait(self, probe_at: float, deadline: float | None) -> bool:
        """A verdict on a probe starting at `probe_at` comes before the caller's deadline and
        within the outage's patience."""
        if deadline is None:
            return False
        verdict_by = probe_at + self.probe_timeout
        return verdict_by <= min(deadline, self._streak_began + self.patience)

    def _start_probe(self) -> asyncio.Future[bool]:
        self._probe_started = self._monotonic()
        self._move(CircuitState.HALF_OPEN, "cooldown over, probing")
        self._probing = asyncio.ensure_future(self._run_probe())
        return self._probing

    async def _run_probe(self) -> bool:
        try:
            async with asyncio.timeout(self.probe_timeout or None):
                await self._probe()
        except (EngineError, TimeoutError) as exc:
            self._last_error = str(exc) or "the health check timed out"
            self._open(f"probe failed: {self._last_error}")
            return False
        else:
            self._close("probe succeeded")
            return True
        finally:
            self._probing = None
            if self.state is CircuitState.HALF_OPEN:  # cancelled, or an unexpected error
                self._open("probe did not finish")

    def _refusal(self) -> CircuitOpenError:
        remaining = self._probe_at() - self._monotonic()
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

    def publish(self) -> None:
        """Set the connection's `tierflow_circuit_state` to this breaker's state (again)."""
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.circuit_state.labels(self.connection).set(_STATE_VALUE[self.state])


def _transient(error: BaseException) -> bool:
    return isinstance(error, EngineError) and error.transient


class _Backoff:
    """Full-jitter exponential backoff that honours Retry-After, for tenacity's `wait`."""

    def __init__(self, config: RetryConfig, rng: random.Random, breaker: CircuitBreaker) -> None:
        self.config = config
        self.rng = rng
        self.breaker = breaker

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.retry_after if isinstance(error, EngineError) else None
        if self.breaker.state is not CircuitState.CLOSED:
            # The circuit decides when the next attempt goes: its guard waits for the probe.
            return retry_after or 0.0
        ceiling = min(
            self.config.max.total_seconds(),
            self.config.initial.total_seconds() * 2 ** (state.attempt_number - 1),
        )
        delay = self.rng.uniform(0, ceiling)
        return delay if retry_after is None else max(delay, retry_after)


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
        probe_timeout: float = 0.0,
    ) -> None:
        self.inner = inner
        self.connection = connection
        self.retry = retry
        self.metrics = metrics
        self._sleep = sleep
        self._monotonic = monotonic
        self.breaker = CircuitBreaker(
            connection,
            circuit,
            inner.ping,
            patience=retry.deadline.total_seconds(),
            probe_timeout=probe_timeout,
            metrics=metrics,
            monotonic=monotonic,
            sleep=sleep,
        )
        self._backoff = _Backoff(retry, rng or random.Random(), self.breaker)

    @property
    def dialect(self) -> Dialect:  # type: ignore[override]  # read through, never set
        """The wrapped engine's: the retry layer speaks no language of its own."""
        return self.inner.dialect

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
        # A result half read cannot be retried here; the window that reads it is re-run.
        return self.inner.query_chunks(text, database=database, chunk_size=chunk_size)

    async def delete(self, target: DeleteRange) -> None:
        # Safe to retry: deleting a range twice leaves it as deleting it once.
        await self._call(lambda: self.inner.delete(target))

    async def ping(self) -> None:
        """The health check itself: straight to the server, whatever the circuit says."""
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def unwrapped(self) -> Engine:
        return self.inner.unwrapped()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        deadline = self._monotonic() + self.retry.deadline.total_seconds()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts)
            | stop_before_delay(self.retry.deadline.total_seconds()),
            wait=self._backoff,
            # With the circuit open, try again only if the probe's verdict can come in time.
            retry=retry_if_exception(
                lambda error: _transient(error) and self.breaker.admits(deadline)
            ),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        failure: EngineError | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    await self.breaker.guard(deadline)
                    try:
                        result = await call()
                    except EngineError as exc:
                        failure = exc
                        self.breaker.record_failure(exc)
                        raise
                    self.breaker.record_success()
                    return result
        except CircuitOpenError:
            if failure is not None:
                # This call was sent and failed: its own failure is the cause, and it counts.
                raise failure from None
            raise
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
        retry_event(
            connection=self.connection,
            attempt=state.attempt_number,
            delay=state.upcoming_sleep,
            error=error,
        )
