"""`tierflow run`: the daemon. One loop per job, each sleeping until its next window closes.

Windows come from the schedule, never from the instant a loop happens to wake, so a late wake-up
runs exactly the windows that are due. On shutdown no new window starts; windows in flight get
`[scheduler] grace` to finish, then are cancelled and recorded as abandoned (they stay due).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from tierflow._clock import Clock, utc_now
from tierflow._config import ServerConfig
from tierflow._errors import TierflowError
from tierflow._logging import log_event
from tierflow._runner import Mode, Runner

__all__ = ["Daemon", "MetricsServer"]

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
        return web.Response(
            body=self.runner.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await self.runner.store.jobs()
            checks["state"] = "ok"
        except TierflowError as exc:
            checks["state"] = str(exc)
        for name in self.runner.config.connections:
            try:
                await asyncio.wait_for(self.runner.engine(name).ping(), 5)
                checks[f"connection:{name}"] = "ok"
            except (TierflowError, TimeoutError) as exc:
                checks[f"connection:{name}"] = str(exc) or "timed out"
        ready = all(value == "ok" for value in checks.values())
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "checks": checks}),
            content_type="application/json",
        )
