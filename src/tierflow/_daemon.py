"""`tierflow run`: the daemon. One loop per job, each sleeping until its next window closes.

Windows come from the schedule, never from the instant a loop happens to wake, so a late wake-up
runs exactly the windows that are due. On shutdown no new window starts; windows in flight get
`[scheduler] grace` to finish, then are cancelled and recorded as abandoned (they stay due).

The daemon registers itself in the state store as a worker and beats every few seconds
(`StateWatch`), so `status` shows it. The beat is also how it knows the store answers: while it
does not (PostgreSQL down or cut off), no job loop claims a window and `/readyz` says not ready;
windows in flight run on and record their outcome once the store answers again (or, if their
lease expired first and another run took them over, are refused by fencing); the first beat
that gets through lets the loops claim again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tierflow._api import ConfigSource, Tierflow, as_config
from tierflow._clock import Clock, utc_now
from tierflow._config import Config, ServerConfig, load_config
from tierflow._errors import (
    ConfigError,
    InvalidInputError,
    JobRedefinedError,
    StateError,
    StateUnavailableError,
    TierflowError,
)
from tierflow._logging import log_event
from tierflow._runner import Mode, Runner
from tierflow._state import StateStore, Worker
from tierflow._state._holder import this_process
from tierflow._state._worker import BEAT_INTERVAL, FORGET_AFTER

if TYPE_CHECKING:
    from aiohttp import web

    from tierflow._engines import Engine

__all__ = ["Daemon", "MetricsServer", "Reload", "StateWatch", "serve"]

_MAX_SLEEP = timedelta(seconds=60)
_FAILURE_PAUSE = timedelta(seconds=5)


@dataclass
class StateWatch:
    """The worker's beat: every `interval` it records itself in the state store (`beat`), and
    so knows whether the store answers. `up` is set while it does; `lost` (a beat or a job loop
    met an unreachable store) clears it, the next beat that gets through sets it again.
    `error` says why the store is down."""

    store: StateStore
    worker: Worker
    clock: Clock = utc_now
    interval: timedelta = BEAT_INTERVAL
    up: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    _down_since: datetime | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, runner: Runner, clock: Clock = utc_now) -> StateWatch:
        """The watch of this process running `runner`'s jobs."""
        from tierflow import __version__

        now = clock()
        worker = Worker(this_process(), __version__, now, now, tuple(runner.config.jobs))
        return cls(runner.store, worker, clock)

    async def beat(self, *, stopped: bool = False) -> bool:
        """Record the worker (as stopped, when `stopped`); say whether the store took it."""
        now = self.clock()
        self.worker = replace(self.worker, last_seen=now, stopped_at=now if stopped else None)
        try:
            # A store cut off without a word (a partition) would hold the beat for as long as
            # the connection takes to give up: two beats' time is the most it may take.
            async with asyncio.timeout(2 * self.interval.total_seconds()):
                await self.store.beat(self.worker, forget_before=now - FORGET_AFTER)
        except (StateError, TimeoutError) as exc:
            self.lost(exc)
            return False
        if self._down_since is not None:
            log_event(
                "state_available",
                down_s=round((now - self._down_since).total_seconds(), 3),
            )
        self._down_since, self.error = None, None
        self.up.set()
        return True

    def lost(self, exc: BaseException) -> None:
        """The store did not answer: stop claiming until a beat gets through."""
        self.error = str(exc) or f"no answer within {2 * self.interval.total_seconds():g} s"
        self.up.clear()
        if self._down_since is None:
            self._down_since = self.clock()
            log_event("state_unavailable", level=logging.ERROR, error=self.error)

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat every `interval` until `stopping` is set."""
        while not stopping.is_set():
            await _wait(stopping, self.interval)
            if not stopping.is_set():
                await self.beat()


@dataclass
class _Generation:
    """One loaded config's runner, and how many job loops are inside it. A reload retires it
    (`replaced` is set: its loops finish what is in flight and move to the new one); once no
    loop is inside, the engines only it used are closed."""

    runner: Runner
    replaced: asyncio.Event = field(default_factory=asyncio.Event)
    busy: int = 0


@dataclass(frozen=True, slots=True)
class Reload:
    """What a successful reload changed: jobs added, removed and changed (their settings, or
    their tiers' or connections'), connections whose engines were replaced, and whether
    `[scheduler]` changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    scheduler: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.added or self.removed or self.changed or self.connections or self.scheduler
        )


@dataclass
class Daemon:
    """Keeps every job's windows running until `stopping` is set. `watch` beats for this
    worker in the state store; no window is claimed while the store does not answer.

    `reload` (what SIGHUP asks for) reads the config file again and, if it passes the checks
    `validate` makes offline, runs it from the next windows on: windows in flight finish under
    the config they started with. `runner` is always the current config's."""

    runner: Runner
    clock: Clock = utc_now
    max_sleep: timedelta = _MAX_SLEEP
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    watch: StateWatch | None = None
    #: Called with the new runner after each successful reload.
    on_reload: list[Callable[[Runner], None]] = field(default_factory=list)
    _current: _Generation = field(init=False, repr=False)
    _retired: list[_Generation] = field(default_factory=list, init=False, repr=False)
    _loops: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)
    _reload_wanted: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _first_engines: dict[str, Engine] = field(default_factory=dict, init=False, repr=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.runner.mode = Mode.DAEMON
        self.runner.stopping = self.stopping
        self._current = _Generation(self.runner)
        self._first_engines = self.runner.engines  # the caller's to close
        if self.watch is None:
            self.watch = StateWatch.of(self.runner, self.clock)

    async def run(self) -> None:
        """Run until `stopping` is set, then drain within the grace period."""
        assert self.watch is not None
        await self.watch.beat()
        self.runner.metrics.config_last_reload_success.set(self.clock().timestamp())
        log_event("daemon_started", jobs=list(self.runner.config.jobs), worker=self.watch.worker.id)
        beating = asyncio.create_task(self.watch.run(self.stopping), name="beat")
        reloads = asyncio.create_task(self._reloads(), name="reloads")
        for job in self.runner.config.jobs:
            self._start_loop(job)
        try:
            await self.stopping.wait()
            reloads.cancel()  # a reload half done changed nothing yet: the running config stays
            with suppress(asyncio.CancelledError):
                await reloads
            grace = self.runner.config.scheduler.grace.total_seconds()
            log_event("daemon_stopping", grace_s=grace)
            loops = list(self._loops.values())
            late: set[asyncio.Task[None]] = set()
            if loops:
                _, late = await asyncio.wait(loops, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            beating.cancel()  # a beat under way is one transaction: it commits or not, whole
            with suppress(asyncio.CancelledError):
                await beating
            await self.watch.beat(stopped=True)  # `status` says stopped, not gone
            log_event("daemon_stopped", abandoned_loops=len(late))
        finally:
            await self._close_engines(final=True)

    def request_reload(self) -> None:
        """Ask for a reload (SIGHUP): one runs as soon as none is under way; asks that arrive
        meanwhile make one more, not one each."""
        self._reload_wanted.set()

    async def _reloads(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    async def reload(self) -> Reload | None:
        """Read the config file again and run it from the next windows on; None (logged as
        `config_reload_failed`, the running config kept) if it does not pass the checks."""
        async with self._reloading:
            old = self._current.runner
            metrics = old.metrics
            try:
                config = await _reloadable(old)
                found = _compare(old.config, config)
            except TierflowError as exc:
                self._reload_failed(old, str(exc).splitlines())
                return None
            except Exception as exc:
                # A bug: the daemon goes on under the running config, and the next SIGHUP is
                # still heard (the reloads task must not die of it).
                text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._reload_failed(old, [f"internal error: {text}"], exc_info=True)
                return None
            if found:
                self._replace(old, config, found)
            metrics.config_reloads.labels("success").inc()
            metrics.config_last_reload_successful.set(1)
            metrics.config_last_reload_success.set(self.clock().timestamp())
            log_event(
                "config_reloaded",
                config=str(config.path),
                jobs_added=list(found.added),
                jobs_removed=list(found.removed),
                jobs_changed=list(found.changed),
                connections_changed=list(found.connections),
                scheduler_changed=found.scheduler,
            )
            return found

    def _reload_failed(self, old: Runner, problems: list[str], *, exc_info: bool = False) -> None:
        log_event(
            "config_reload_failed",
            level=logging.ERROR,
            exc_info=exc_info,
            config=str(old.config.path),
            problems=problems,
            kept="the running config",
        )
        old.metrics.config_reloads.labels("failure").inc()
        old.metrics.config_last_reload_successful.set(0)

    def _replace(self, old: Runner, config: Config, found: Reload) -> None:
        """Make `config` the running one: a new runner from the next windows on, the old one
        retired once its windows in flight finish."""
        assert self.watch is not None
        kept = {
            name: engine
            for name, engine in old.engines.items()
            if name not in found.connections and name in config.connections
        }
        runner = Runner(
            config,
            old.store,
            kept,
            clock=old.clock,
            on_progress=old.on_progress,
            metrics=old.metrics,
            mode=Mode.DAEMON,
            stopping=self.stopping,
            check_fields=old.check_fields,
        )
        runner.follow(old)
        retired, self._current = self._current, _Generation(runner)
        self.runner = runner
        old.retired = True
        retired.replaced.set()
        self._retired.append(retired)
        self.watch.worker = replace(self.watch.worker, jobs=tuple(config.jobs))
        for job in found.added:
            self._start_loop(job)
        for call in self.on_reload:
            call(runner)
        if not retired.busy:
            self._close_later()

    def _start_loop(self, job: str) -> None:
        running = self._loops.get(job)
        if running is not None and not running.done():
            return  # removed, then added back before its loop ended: the loop goes on
        self._loops[job] = asyncio.create_task(self._job_loop(job), name=f"job:{job}")

    async def _job_loop(self, job: str) -> None:
        assert self.watch is not None
        failures = 0
        accepted: Runner | None = None  # the runner whose definition of `job` was accepted
        while not self.stopping.is_set():
            generation = self._current
            runner = generation.runner
            if job not in runner.config.jobs:
                runner.metrics.forget_job(job)
                log_event("job_removed", job=job, note="its windows in flight are done")
                return
            if not self.watch.up.is_set():
                # The store does not answer: claim nothing until a beat gets through.
                await _first(self.watch.up, self.stopping)
                continue
            pause = None
            generation.busy += 1
            try:
                if accepted is not runner:
                    # A job added or changed by a reload: the rules of redefinition, as at start.
                    await _accept(runner, job)
                    accepted = runner
                now = self.clock()
                await runner.run_job(job, now)
                if generation.replaced.is_set():
                    continue  # the rest under the reloaded config
                if not self.stopping.is_set():
                    await runner.recheck(job, now)
                # Refreshes the lag and pending gauges.
                await runner.status(self.clock(), [job])
                wake = await runner.next_wake(job, self.clock())
                pause = min(wake - self.clock(), self.max_sleep)
                failures = 0
            except StateUnavailableError as exc:
                log_event("job_loop_error", level=logging.ERROR, job=job, error=str(exc))
                self.watch.lost(exc)
                pause = timedelta(0)  # waits for the store above
            except TierflowError as exc:
                # The state store or the config went wrong under us: say so, pause, try again,
                # pausing longer each time it fails again.
                log_event("job_loop_error", level=logging.ERROR, job=job, error=str(exc))
                failures += 1
                pause = self._backoff(failures)
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
                failures += 1
                pause = self._backoff(failures)
            finally:
                generation.busy -= 1
                if generation.replaced.is_set() and not generation.busy:
                    self._close_later()
            if pause is not None and pause > timedelta(0):
                await _wait(self.stopping, pause, generation.replaced)

    def _close_later(self) -> None:
        task = asyncio.get_running_loop().create_task(self._close_engines())
        self._closing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._closing.discard)

    async def _close_engines(self, *, final: bool = False) -> None:
        """Close the engines of retired configs that no config still in use holds (`final`:
        every engine but those of the runner the daemon was given, which its caller closes)."""
        idle = [g for g in self._retired if final or not g.busy]
        if final:
            idle.append(self._current)
        keep = [self._first_engines] if final else [self._current.runner.engines]
        keep += [g.runner.engines for g in self._retired if g not in idle]
        held = {id(engine) for engines in keep for engine in engines.values()}
        closing: dict[int, Engine] = {}
        closed: set[str] = set()
        for generation in idle:
            engines = generation.runner.engines
            for name, engine in list(engines.items()):
                if id(engine) not in held:
                    closing[id(engine)] = engines.pop(name)
                    closed.add(name)
        self._retired = [g for g in self._retired if g not in idle]
        if closing:
            await asyncio.gather(*(e.aclose() for e in closing.values()), return_exceptions=True)
        if not final:
            # A connection no config in use has: its series go (a circuit left open would
            # page for ever), once its engines, which publish them, are closed.
            used = {c for g in [self._current, *self._retired] for c in g.runner.config.connections}
            metrics = self._current.runner.metrics
            for name in {c for g in idle for c in g.runner.config.connections} - used:
                metrics.forget_connection(name)
            # A connection changed: the circuit gauge is its current engine's again (the old
            # one may have published last), or closed, as a new engine's starts, until made.
            for name in closed & set(self._current.runner.config.connections):
                self._publish_circuit(name)

    def _publish_circuit(self, connection: str) -> None:
        from tierflow._resilience import ResilientEngine

        runner = self._current.runner
        engine = runner.engines.get(connection)
        if isinstance(engine, ResilientEngine):
            engine.breaker.publish()
        else:
            runner.metrics.circuit_state.labels(connection).set(0)

    def _backoff(self, failures: int) -> timedelta:
        """The pause after the `failures`th failure in a row: doubling, at most `max_sleep`."""
        return min(_FAILURE_PAUSE * (1 << min(failures - 1, 16)), self.max_sleep)


async def _reloadable(running: Runner) -> Config:
    """The config file of `running` read again, if it passes what `validate` checks offline
    (the config, the packages it needs, every job's query for a sample window, no job
    redefined since its ledger was recorded) and keeps what cannot change while running;
    ConfigError (or JobRedefinedError) saying why not."""
    from tierflow._definitions import check_definitions, refusal

    old = running.config
    if old.path.name == "<mapping>":
        raise ConfigError("the config was given as a mapping, not read from a file: no reload")
    config = await asyncio.to_thread(_checked, old.path)
    fixed = [name for name in ("state", "server") if getattr(config, name) != getattr(old, name)]
    if fixed:
        raise ConfigError(
            f"{config.path}: "
            + " and ".join(f"[{name}]" for name in fixed)
            + " changed: they cannot change while tierflow runs; restart it to apply them"
        )
    checks = await check_definitions(config, running.store)
    redefined = [check for check in checks if check.state == "changed"]
    if redefined:
        raise JobRedefinedError("\n".join(refusal(config, check) for check in redefined))
    return config


def _checked(path: Path) -> Config:
    from tierflow._preflight import missing_extras
    from tierflow._validation import check_jobs

    config = load_config(path)
    problems = [p for p in missing_extras(config) + check_jobs(config) if not p.warning]
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problem(s)\n"
            + "\n".join("  " + problem.render() for problem in problems)
        )
    return config


async def _accept(runner: Runner, job: str) -> None:
    from tierflow._definitions import accept_definitions

    await accept_definitions(runner.config, runner.store, [job])


def _compare(old: Config, new: Config) -> Reload:
    """What differs between the running config and the reloaded one."""
    from tierflow._definitions import job_definition

    connections = tuple(
        name for name, spec in old.connections.items() if new.connections.get(name) != spec
    )

    def uses(config: Config, job: str) -> tuple[object, ...]:
        spec = config.jobs[job]
        tiers = (config.tiers[spec.source], config.tiers[spec.dest])
        return (spec, tiers, tuple(config.connections.get(t.connection) for t in tiers))

    kept = [job for job in new.jobs if job in old.jobs]
    return Reload(
        added=tuple(job for job in new.jobs if job not in old.jobs),
        removed=tuple(job for job in old.jobs if job not in new.jobs),
        changed=tuple(
            job
            for job in kept
            if uses(old, job) != uses(new, job)
            or job_definition(old, job) != job_definition(new, job)
        ),
        connections=connections,
        scheduler=old.scheduler != new.scheduler,
    )


async def _wait(event: asyncio.Event, pause: timedelta, *more: asyncio.Event) -> None:
    """Sleep `pause`, or less if `event` (or one of `more`) is set meanwhile."""
    with suppress(TimeoutError):
        await asyncio.wait_for(_first(event, *more), pause.total_seconds())


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


@dataclass
class MetricsServer:
    """Serves `/metrics` (Prometheus), `/healthz` (alive) and `/readyz` (state store and every
    connection reachable), and the status page `/` with its `/api/status` (see
    `tierflow._status_page`). With the daemon's `watch`, the state store is not ready while the
    worker's beats do not get through (the daemon claims nothing then). With `[server] token`,
    `/metrics` and `/api/status` ask for it as a bearer token; the probes never do."""

    runner: Runner
    config: ServerConfig
    watch: StateWatch | None = None
    _site: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web  # the server side of aiohttp: only for a daemon that serves

        from tierflow._status_page import Guard, add_status_routes
        from tierflow._tracing import server_spans  # an incoming `traceparent` is honoured

        guard = Guard(self.config.token)  # the probes stay open: they say only up or not
        app = web.Application(middlewares=[server_spans()])
        app.router.add_get("/metrics", guard(self._metrics))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        add_status_routes(app, lambda: self.runner, guard)
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
        if self.watch is not None and not self.watch.up.is_set():
            checks["state"] = f"unavailable, not claiming: {self.watch.error}"
        else:
            try:
                await asyncio.wait_for(self.runner.store.jobs(), 5)
                checks["state"] = "ok"
            except (TierflowError, TimeoutError) as exc:
                checks["state"] = str(exc) or "timed out"
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
    `stopping` is set; SIGHUP reloads the config file (see `Daemon.reload`).

    Every job's windows run as they become due; `[server] listen`, when set, serves `/metrics`,
    `/healthz` and `/readyz`. The first signal stops new windows and lets those in flight finish
    within `[scheduler] grace`; a second one exits the process at once (windows in flight stay
    claimed until their lease expires). `signals=False` leaves the process's signals alone (the
    caller sets `stopping`). Each job's definition must match the one its ledger was recorded
    with (`JobRedefinedError` if not). `trace_memory` logs RSS and the top allocation sites every
    so many seconds; `on_started` is called (and awaited if it returns an awaitable) with the
    runner before the first window, `on_stopped` once the daemon has stopped."""
    from tierflow._definitions import accept_definitions

    if signals:
        hold_hangups()
    loaded = as_config(config)
    async with Tierflow(loaded, state=state) as tf:
        await accept_definitions(loaded, tf.store, None)
        daemon = Daemon(tf.runner, stopping=stopping or asyncio.Event())
        if on_started is not None and inspect.isawaitable(started := on_started(tf.runner)):
            await started
        handled = _handle_signals(daemon) if signals else []
        server = MetricsServer(tf.runner, loaded.server, daemon.watch) if loaded.server else None
        if server is not None:
            daemon.on_reload.append(lambda runner: setattr(server, "runner", runner))
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


_held_hangups: list[int] = []


def hold_hangups() -> None:
    """Keep a SIGHUP that arrives while the daemon is still starting (reading its config,
    opening its state, before its event loop handles signals) instead of dying of it, as the
    default disposition would: `serve` turns it into a reload once it handles signals. Called
    first thing by `tierflow run`, and by `serve`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda signum, _frame: _held_hangups.append(signum))


def _handle_signals(daemon: Daemon) -> list[signal.Signals]:
    """SIGTERM and SIGINT: the first stops the daemon gracefully, a second exits at once.
    SIGHUP: reload the config (ignored once stopping)."""
    loop = asyncio.get_running_loop()

    def on_hangup() -> None:
        if daemon.stopping.is_set():
            log_event("signal_ignored", signal="SIGHUP", reason="stopping")
            return
        log_event("signal_received", signal="SIGHUP")
        daemon.request_reload()

    def on_signal(signum: signal.Signals) -> None:
        if daemon.stopping.is_set():
            log_event("second_signal_exit", level=logging.WARNING, signal=signum.name)
            os._exit(1)
        log_event("signal_received", signal=signum.name)
        daemon.stopping.set()

    handled = [signal.SIGTERM, signal.SIGINT]
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if _held_hangups:  # a SIGHUP came while starting: the file may have changed since it was read
        _held_hangups.clear()
        on_hangup()
    return [*handled, signal.SIGHUP]


async def _start(server: MetricsServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        listen = server.config.listen  # the config itself would show how the token is sourced
        raise InvalidInputError(f"cannot serve on {listen}: {exc.strerror}") from exc
