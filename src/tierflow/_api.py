"""The Python API: `async with tierflow.open(config) as tf:` and everything the CLI can do.

`Tierflow` owns what a config needs at run time: the state store, a `Runner` (which opens each
connection's engine on first use) and the cold tiers' archives, and closes them on the way out.
Each method is what the command of the same name does, minus the printing; results are the
library's own dataclasses. Every instant is timezone-aware; `now` defaults to the current UTC
time. Errors are `TierflowError`s (see `tierflow._errors`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from tierflow._clock import Clock, utc_now
from tierflow._config import Config, load_config
from tierflow._engines import Engine, engine_for
from tierflow._errors import InvalidInputError
from tierflow._metrics import Metrics
from tierflow._runner import BatchRun, JobPlan, JobStatus, Runner, select_jobs
from tierflow._state import Attempt, LedgerEntry, StateStore, Worker, open_state_store
from tierflow._state._worker import SHOWN_FOR

if TYPE_CHECKING:
    from tierflow._apply import Change
    from tierflow._archive import ParquetArchive, QueryResult, VerifyProblem
    from tierflow._archiving import Archives
    from tierflow._transfer import Transfer
    from tierflow._validation import Problem

__all__ = ["ConfigSource", "Status", "Tierflow", "Validation", "as_config", "open"]

#: A config, a TOML file's path, or a mapping shaped like one.
ConfigSource = Config | Path | str | Mapping[str, Any]


def as_config(config: ConfigSource) -> Config:
    """`config` itself, the TOML file it names, or the mapping it is (see `Config.from_mapping`)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Path | str):
        return load_config(config)
    return Config.from_mapping(config)


def open(
    config: ConfigSource, *, state: StateStore | str | None = None, clock: Clock = utc_now
) -> Tierflow:
    """An async context manager over `config`: `async with tierflow.open(config) as tf: ...`.

    `state` is a store to use (yours to close) or a state URL in place of the config's
    (`memory://`, `sqlite:///path.db`); by default the config's `[state] url`."""
    return Tierflow(as_config(config), state=state, clock=clock)


@dataclass(frozen=True, slots=True)
class Validation:
    """What `validate` found: `problems` (each a `Problem`: config, job, or a server that could
    not be asked) and `warnings` (texts). `ok` when there is no problem."""

    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Status(Sequence[JobStatus]):
    """What `status` found at `now`: where each job stands (`jobs`), and the workers (`tierflow
    run` daemons) that beat within the hour before `now` (`workers`, oldest started first; each
    one's `state(now)` says live, gone or stopped).

    A Status is also the sequence of its jobs' statuses, as `status` returned before it showed
    the workers: `(job,) = await tf.status()` and `for job in await tf.status()` still work."""

    now: datetime
    jobs: tuple[JobStatus, ...]
    workers: tuple[Worker, ...] = ()

    @overload
    def __getitem__(self, index: int) -> JobStatus: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[JobStatus]: ...

    def __getitem__(self, index: int | slice) -> JobStatus | Sequence[JobStatus]:
        return self.jobs[index]

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[JobStatus]:
        return iter(self.jobs)


class Tierflow:
    """An open tierflow: a config with its state store, runner, engines and archives.

    Each is opened on first use (a command that needs no state, e.g. `restore`, leaves no state
    file behind) and closed by `aclose`, which `async with` calls."""

    def __init__(
        self, config: Config, *, state: StateStore | str | None = None, clock: Clock = utc_now
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self._state = state
        self._store: StateStore | None = state if isinstance(state, StateStore) else None
        self._engines: dict[str, Engine] = {}
        self._runner: Runner | None = None
        self._archives: Archives | None = None

    async def __aenter__(self) -> Tierflow:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the engines, and the state store unless it was given to `open`."""
        engines, self._engines = list(self._engines.values()), {}
        store, self._runner = self._store, None
        try:
            await asyncio.gather(*(engine.aclose() for engine in engines))
        finally:
            if store is not None and store is not self._state:
                self._store = None
                await store.aclose()

    @property
    def store(self) -> StateStore:
        """The state store (opened on first use)."""
        if self._store is None:
            self._store = open_state_store(
                self._url(),
                password=self.config.state.password,
                keep_history=self.config.state.keep_history,
            )
        return self._store

    @property
    def runner(self) -> Runner:
        """The runner over the state store (made on first use)."""
        if self._runner is None:
            self._runner = Runner(
                self.config, self.store, self._engines, clock=self.clock, metrics=self.metrics
            )
        return self._runner

    def engine(self, connection: str) -> Engine:
        """The engine of `connection` (opened on first use, with retries and circuit breaker)."""
        if connection not in self._engines:
            self._engines[connection] = engine_for(
                connection, self.config.connections[connection], self.metrics
            )
        return self._engines[connection]

    def _url(self) -> str:
        return self._state if isinstance(self._state, str) else self.config.state.url

    def _now(self, now: datetime | None) -> datetime:
        return aware(now, "now") if now is not None else self.clock()

    # -- what the windows need -------------------------------------------------------------------

    async def plan(
        self, now: datetime | None = None, jobs: Iterable[str] | None = None
    ) -> list[JobPlan]:
        """The windows due at `now` per job (all jobs by default), as the batches that would
        run them (one query each) and the runs of windows `max_catchup` would skip; nothing is
        run or recorded. A batch is its first window and a count: a year of one-minute windows
        is 8,760 one-hour batches, however long the catch-up."""
        return await self.runner.plan(self._now(now), jobs)

    async def run_once(
        self, jobs: Iterable[str] | None = None, now: datetime | None = None, *, wait: bool = False
    ) -> list[BatchRun]:
        """Run every window due at `now` once and record each (what `tierflow run-once` does).

        Each chosen job's definition must match the one its ledger was recorded with
        (`JobRedefinedError` if not). Windows another live run holds are left to it (see
        `held`), unless `wait`: then wait for them and run what is still due."""
        from tierflow._definitions import accept_definitions

        chosen = select_jobs(self.config, jobs)
        await accept_definitions(self.config, self.store, chosen)
        at = self._now(now)
        self.runner.check_fields = True
        if wait:
            return await self.runner.run_waiting(at, chosen)
        return await self.runner.run_due(at, chosen)

    async def held(self) -> list[LedgerEntry]:
        """The windows the last run found held by other runs and still not done."""
        return await self.runner.held_undone()

    async def backfill(
        self, job: str, start: datetime, stop: datetime, now: datetime | None = None
    ) -> list[BatchRun]:
        """Re-run `job`'s windows overlapping `[start, stop)` that are complete at `now`,
        whatever the ledger says; the results overwrite the earlier ones."""
        begin, end = _range(start, stop)
        return await self.runner.backfill(job, begin, end, self._now(now))

    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        """Give `job`'s parked windows in `[start, stop)` (all when both are None) a fresh
        attempt budget; return how many."""
        if (start is None) != (stop is None):
            raise InvalidInputError("give both start and stop, or neither")
        if start is not None and stop is not None:
            start, stop = _range(start, stop)
        return await self.runner.requeue(job, start, stop)

    # -- where things stand ----------------------------------------------------------------------

    async def status(
        self, jobs: Iterable[str] | None = None, now: datetime | None = None
    ) -> Status:
        """Per job: watermark, lag, failed, parked and pending windows, claims, expiry risk;
        and the workers seen within the hour before `now`, live or not."""
        at = self._now(now)
        found = await self.runner.status(at, jobs)
        workers = await self.store.workers(at - SHOWN_FOR)
        return Status(at, tuple(found), tuple(workers))

    async def next_wake(self, job: str, now: datetime | None = None) -> datetime:
        """When `job` next has a window to run, as seen at `now`."""
        select_jobs(self.config, [job])
        return await self.runner.next_wake(job, self._now(now))

    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        """`job`'s latest attempts, newest first."""
        select_jobs(self.config, [job])
        return await self.store.history(job, limit=limit)

    # -- the tiers -------------------------------------------------------------------------------

    async def validate(self, *, online: bool = False, now: datetime | None = None) -> Validation:
        """Check the optional packages the config needs, every job's query for a sample window,
        the recorded definitions and (`online`) each server: databases, buckets, fields."""
        from tierflow._definitions import definition_problems
        from tierflow._preflight import missing_extras, warnings_for
        from tierflow._validation import check_jobs, check_servers

        problems = missing_extras(self.config) + check_jobs(self.config)
        if online and not problems:
            problems = await check_servers(self.config)
        if not any(problem.unreachable for problem in problems):
            problems += await definition_problems(self.config)
        warnings = [p.render() for p in problems if p.warning]
        warnings += warnings_for(self.config, self._now(now))
        return Validation(tuple(p for p in problems if not p.warning), tuple(warnings))

    async def apply(
        self,
        *,
        dry_run: bool = True,
        force: bool = False,
        allow_shrink: bool = False,
        now: datetime | None = None,
    ) -> list[Change]:
        """Make the declared tiers real (databases, retention policies, buckets, archive
        directories); with `dry_run` (the default) only say what would change. Never deletes;
        `ApplyRefusedError` with nothing changed if a tier cannot be applied as declared."""
        from tierflow._apply import apply_tiers

        return await apply_tiers(
            self.config,
            now=self._now(now),
            dry_run=dry_run,
            force=force,
            allow_shrink=allow_shrink,
        )

    def archive(self, tier: str) -> ParquetArchive:
        """The archive of cold tier `tier` (InvalidInputError if it is not one)."""
        spec = self.config.tiers.get(tier)
        if spec is None or not spec.is_archive:
            cold = [name for name, t in self.config.tiers.items() if t.is_archive]
            raise InvalidInputError(
                f"{tier!r} is not a cold tier of {self.config.path}; cold tiers: "
                f"{', '.join(cold) or 'none'}"
            )
        if self._archives is None:
            from tierflow._archiving import Archives

            self._archives = Archives(self.config)
        return self._archives(tier)

    async def archive_verify(self, tier: str) -> list[VerifyProblem]:
        """Re-check every file of cold tier `tier` (exists, checksum, row count): the bad ones."""
        return self.archive(tier).verify()

    async def archive_query(self, tier: str, sql: str) -> QueryResult:
        """Run SQL over cold tier `tier` with DuckDB (extra `tierflow[archive-query]`)."""
        return self.archive(tier).query(sql)

    async def restore(
        self,
        tier: str,
        start: datetime,
        stop: datetime,
        *,
        into: str,
        measurement: str | None = None,
    ) -> Transfer:
        """Write the points cold tier `tier` holds in `[start, stop)` back into live tier `into`,
        point for point. A measurement the live tier refuses is left out and listed in the
        result's `failures`; the others are restored."""
        from tierflow._archiving import restore

        archive = self.archive(tier)
        target = self.config.tiers.get(into)
        if target is None or target.is_archive:
            raise InvalidInputError(f"--into {into!r} is not a live tier of {self.config.path}")
        begin, end = _range(start, stop)
        connection = self.config.connections[target.connection]
        return await restore(
            archive,
            self.engine(target.connection),
            target,
            start=begin,
            stop=end,
            measurement=measurement,
            max_concurrency=connection.max_concurrency,
        )


def aware(moment: datetime, name: str) -> datetime:
    """`moment` in UTC; InvalidInputError if it is naive."""
    if moment.tzinfo is None:
        raise InvalidInputError(f"{name} {moment.isoformat()} has no time zone; give it in UTC")
    return moment.astimezone(UTC)


def _range(start: datetime, stop: datetime) -> tuple[datetime, datetime]:
    begin, end = aware(start, "start"), aware(stop, "stop")
    if begin >= end:
        raise InvalidInputError(f"start {begin.isoformat()} is not before stop {end.isoformat()}")
    return begin, end
