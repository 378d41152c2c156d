"""`tierflow run`: the daemon. One loop per job, each sleeping until its next window closes.

Windows come from the schedule, never from the instant a loop happens to wake, so a late wake-up
runs exactly the windows that are due. On shutdown no new window starts; windows in flight get
`[scheduler] grace` to finish, then are cancelled and recorded as abandoned (they stay due).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from tierflow._api import ConfigSource, Tierflow, as_config
from tierflow._clock import Clock, utc_now
from tierflow._config import ServerConfig
from tierflow._errors import InvalidInputError, TierflowError
from tierflow._logging import log_event
from tierflow._runner import Mode, Runner
from tierflow._state import StateStore

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Daemon", "MetricsServer", "serve"]

_MAX_SLEEP = timedelta(seconds=60)
_FAILURE_PAUSE = timedelta(seconds=5)


@dataclass
class Daemon:
    """Keeps every job's windows running until `stopping` is set."""

    runner: Runner
    clock: Clock = utc_now
    max_sleep: timedelta = _MAX_SLEEP
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.runner.mode = Mode.DAEMON
        self.runner.stopping = self.stopping

    async def run(self) -> None:
        """Run until `stopping` is set, then drain within the grace period."""
        jobs = list(self.runner.config.jobs)
        log_event("daemon_started", jobs=jobs)
        loops = [asyncio.create_task(self._job_loop(job), name=f"job:{job}") for job in jobs]
        await self.stopping.wait()
        grace = self.runner.config.scheduler.grace.total_seconds()
        log_event("daemon_stopping", grace_s=grace)
        _, late = await asyncio.wait(loops, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        log_event("daemon_stopped", abandoned_loops=len(late))

    async def _job_loop(self, job: str) -> None:
        while not self.stopping.is_set():
            pause = None
            try:
                now = self.clock()
                await self.runner.run_job(job, now)
                if not self.stopping.is_set():
                    await self.runner.recheck(job, now)
                # Refreshes the lag and pending gauges.
                await self.runner.status(self.clock(), [job])
                wake = await self.runner.next_wake(job, self.clock())
                pause = min(wake - self.clock(), self.max_sleep)
            except TierflowError as exc:
                # The state store or the config went wrong under us: say so, pause, try again.
                log_event("job_loop_error", level=logging.ERROR, job=job, error=str(exc))
                pause = _FAILURE_PAUSE
            except Exception as exc:
                # A bug. Ending the loop would stop this job's windows for good while the daemon
                # looks alive (and a later SIGTERM would swallow the error): log it whole, pause,
                # try again. Every state write is one transaction, so nothing recorded is lost.
                text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log_event(
                    "job_loop_error",
                    level=logging.ERROR,
                    exc_info=True,
                    job=job,
                    error=f"internal error: {text}",
                )
                pause = _FAILURE_PAUSE
            if pause > timedelta(0):
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), pause.total_seconds())


@dataclass
class MetricsServer:
    """Serves `/metrics` (Prometheus), `/healthz` (alive) and `/readyz` (state store and every
    connection reachable)."""

    runner: Runner
    config: ServerConfig
    _site: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web  # the server side of aiohttp: only for a daemon that serves

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._site = web.AppRunner(app, access_log=None)
        await self._site.setup()
        host, port = self.config.host_port
        await web.TCPSite(self._site, host, port).start()
        log_event("metrics_server_started", listen=self.config.listen)

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        from aiohttp import web

        await self._check_ready()  # refreshes `tierflow_ready` for this scrape
        return web.Response(
            body=self.runner.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def _healthz(self, _: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        from aiohttp import web

        ready, checks = await self._check_ready()
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "checks": checks}),
            content_type="application/json",
        )

    async def _check_ready(self) -> tuple[bool, dict[str, str]]:
        """Whether the state store and every connection answer, each check's verdict, and the
        `tierflow_ready` gauge set to match."""
        checks: dict[str, str] = {}
        try:
            await self.runner.store.jobs()
            checks["state"] = "ok"
        except TierflowError as exc:
            checks["state"] = str(exc)
        # All at once: a scrape must not wait five seconds per hung connection.
        names = list(self.runner.config.connections)
        verdicts = await asyncio.gather(*(self._ping(name) for name in names))
        checks.update({f"connection:{n}": v for n, v in zip(names, verdicts, strict=True)})
        ready = all(value == "ok" for value in checks.values())
        self.runner.metrics.ready.set(1 if ready else 0)
        return ready, checks

    async def _ping(self, name: str) -> str:
        try:
            await asyncio.wait_for(self.runner.engine(name).ping(), 5)
        except (TierflowError, TimeoutError) as exc:
            return str(exc) or "timed out"
        return "ok"


async def serve(
    config: ConfigSource,
    *,
    state: StateStore | str | None = None,
    stopping: asyncio.Event | None = None,
    signals: bool = True,
    trace_memory: float | None = None,
    on_started: Callable[[Runner], Awaitable[None] | None] | None = None,
    on_stopped: Callable[[], None] | None = None,
) -> None:
    """Run the daemon on `config` (what `tierflow run` does) until SIGTERM or SIGINT, or until
    `stopping` is set.

    Every job's windows run as they become due; `[server] listen`, when set, serves `/metrics`,
    `/healthz` and `/readyz`. The first signal stops new windows and lets those in flight finish
    within `[scheduler] grace`; a second one exits the process at once (windows in flight stay
    claimed until their lease expires). `signals=False` leaves the process's signals alone (the
    caller sets `stopping`). Each job's definition must match the one its ledger was recorded
    with (`JobRedefinedError` if not). `trace_memory` logs RSS and the top allocation sites every
    so many seconds; `on_started` is called (and awaited if it returns an awaitable) with the
    runner before the first window, `on_stopped` once the daemon has stopped."""
    from tierflow._definitions import accept_definitions

    loaded = as_config(config)
    async with Tierflow(loaded, state=state) as tf:
        await accept_definitions(loaded, tf.store, None)
        daemon = Daemon(tf.runner, stopping=stopping or asyncio.Event())
        if on_started is not None and inspect.isawaitable(started := on_started(tf.runner)):
            await started
        handled = _handle_signals(daemon) if signals else []
        server = MetricsServer(tf.runner, loaded.server) if loaded.server else None
        tracer = None
        if trace_memory is not None:
            from tierflow._memtrace import trace_memory as tracing

            tracer = asyncio.create_task(tracing(trace_memory))
        try:
            if server is not None:
                await _start(server)
            await daemon.run()
        finally:
            if tracer is not None:
                tracer.cancel()
            if on_stopped is not None:
                on_stopped()
            if server is not None:
                await server.stop()
            loop = asyncio.get_running_loop()
            for signum in handled:
                loop.remove_signal_handler(signum)


def _handle_signals(daemon: Daemon) -> list[signal.Signals]:
    """SIGTERM and SIGINT: the first stops the daemon gracefully, a second exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if daemon.stopping.is_set():
            log_event("second_signal_exit", level=logging.WARNING, signal=signum.name)
            os._exit(1)
        log_event("signal_received", signal=signum.name)
        daemon.stopping.set()

    handled = [signal.SIGTERM, signal.SIGINT]
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    return handled


async def _start(server: MetricsServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        raise InvalidInputError(f"cannot serve metrics on {server.config}: {exc.strerror}") from exc
