"""The `tierflow` command: parse, call the library, print (rich tables for people, --json for
machines). Exit codes: 0 done, 1 some window failed, 2 bad input (config, arguments)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tierflow import __version__
from tierflow._clock import utc_now
from tierflow._config import DEFAULT_CONFIG, Config, load_config
from tierflow._errors import ConfigError, TierflowError, UnknownJobError
from tierflow._logging import configure_logging, log_event
from tierflow._runner import BatchRun, Runner, WindowRun, select_jobs
from tierflow._state import RunStatus, open_state_store
from tierflow._windows import isoformat

if TYPE_CHECKING:
    from tierflow._archive import ParquetArchive
    from tierflow._definitions import DefinitionCheck

__all__ = ["app", "main"]

app = typer.Typer(
    name="tierflow",
    help="Run the life of InfluxDB time-series data: downsample, archive, restore.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup off: messages, queries and errors hold user text with brackets, printed as it is.
out = Console(
    highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200
)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="TIERFLOW_CONFIG", help="The config file.", show_default=True
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Act as if it were this instant (RFC 3339 with a zone), not now."),
]
JobsArgument = Annotated[
    list[str] | None, typer.Argument(help="Jobs (default: all).", show_default=False)
]


class BadInput(TierflowError):
    """A command-line argument is wrong (exit code 2)."""


def _fail(message: str, code: int) -> NoReturn:
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, BadInput, UnknownJobError) as exc:
        _fail(str(exc), 2)
    except TierflowError as exc:
        _fail(str(exc), 1)


def _instant(text: str | None, option: str) -> datetime:
    if text is None:
        return utc_now()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise BadInput(f"{option} {text!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise BadInput(f"{option} {text!r} has no time zone; add Z for UTC")
    return moment.astimezone(UTC)


def _runner(config: Config, jobs: Sequence[str] | None = None) -> Runner:
    """A runner on the configured state store, once the job names are known to be right (a typo
    must not leave a state file behind)."""
    select_jobs(config, jobs)
    return Runner(config, open_state_store(config.state.url))


def _checked_runner(config: Config, jobs: Sequence[str] | None = None) -> Runner:
    """A runner, once every chosen job's definition matches the one its ledger was recorded
    with (JobRedefinedError, exit 2, naming what changed, if not)."""
    from tierflow._definitions import accept_definitions

    runner = _runner(config, jobs)
    try:
        accept_definitions(config, runner.store, jobs)
    except BaseException:
        runner.store.close()
        raise
    return runner


def _definition_json(check: DefinitionCheck) -> dict[str, Any]:
    return {
        "state": check.state,
        "digest": check.definition.digest,
        "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in check.changes],
    }


def _print_redefined(checks: Iterable[DefinitionCheck]) -> None:
    from tierflow._definitions import summary

    for check in checks:
        if check.state == "changed":
            out.print(Text.assemble((check.job, "bold"), ": ", summary(check), style="red"))


def _run(runner: Runner, work: Callable[[Runner], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            return await work(runner)
        finally:
            await runner.aclose()
            runner.store.close()

    return asyncio.run(go())


@contextmanager
def _progress(runner: Runner, total: int, as_json: bool) -> Iterator[None]:
    """A progress bar (windows done / total, rate, ETA) for people at a terminal, and only then."""
    if as_json or total == 0 or not sys.stdout.isatty():
        yield
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.1f} windows/s" if task.speed else "")

    columns = (
        TextColumn("windows"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("windows", total=total)
        runner.on_progress = lambda done: bar.advance(task, done)
        yield


def _print_json(body: object) -> None:
    sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")


def _when(moment: datetime | None) -> str | None:
    return isoformat(moment) if moment else None


@app.command()
def validate(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online", help="Also ask each server: buckets, databases, Flux syntax (analyze)."
        ),
    ] = False,
) -> None:
    """Check the config and every job's query for a sample window; exit 0 if all is well, 2 (with
    every problem listed) if not, 1 if a server could not be asked (--online)."""
    from tierflow._definitions import definition_problems
    from tierflow._validation import check_jobs, check_servers

    with _errors():
        loaded = load_config(config)
        problems = check_jobs(loaded)
        if online and not problems:
            problems = asyncio.run(check_servers(loaded))
        if not any(problem.unreachable for problem in problems):
            problems += definition_problems(loaded)
    if problems:
        listing = "\n".join("  " + problem.render() for problem in problems)
        code = 2 if any(not problem.unreachable for problem in problems) else 1
        _fail(f"{config}: {len(problems)} problem(s)\n{listing}", code)
    if as_json:
        _print_json({"valid": True, "config": str(config), "jobs": list(loaded.jobs)})
    else:
        out.print(f"{config}: valid ({len(loaded.jobs)} job(s), {len(loaded.tiers)} tier(s))")


@app.command()
def plan(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the windows due now (or at --now) per job, with the exact query each would run."""
    from tierflow._definitions import check_definitions
    from tierflow._jobs import render_job

    with _errors():
        loaded = load_config(config)
        at = _instant(now, "--now")
        runner = _runner(loaded, jobs)
        try:
            plans = runner.plan(at, jobs)
            checks = {c.job: c for c in check_definitions(loaded, runner.store, jobs)}
            body: dict[str, Any] = {
                "jobs": [
                    {
                        "job": p.job,
                        "definition": _definition_json(checks[p.job]),
                        "windows": [
                            {
                                "start": _when(w.start),
                                "stop": _when(w.stop),
                                "query": None,
                                "action": "skip",
                            }
                            for w in p.skipped
                        ]
                        + [
                            {
                                "start": _when(w.start),
                                "stop": _when(w.stop),
                                "query": query,
                                "action": "run",
                            }
                            for batch in p.batches
                            for query in [render_job(loaded, p.job, batch).text]
                            for w in batch.windows
                        ],
                    }
                    for p in plans
                ]
            }
        finally:
            runner.store.close()
    if as_json:
        _print_json(body)
        return
    _print_redefined(checks.values())
    for job in body["jobs"]:
        out.print(
            Text.assemble(
                (job["job"], "bold"), f": {len(job['windows'])} window(s) due at {_when(at)}"
            )
        )
        last = None
        for window in job["windows"]:
            skip = "  (skip: older than max_catchup)" if window["action"] == "skip" else ""
            out.print(f"  [{window['start']}, {window['stop']}){skip}")
            if window["query"] is not None and window["query"] != last:
                # Flux keeps its lines: indent each one, not just the first.
                out.print(Text(textwrap.indent(window["query"], "    "), style="dim"))
                last = window["query"]


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count:,} {noun if count == 1 else (plural or noun + 's')}"


def _report_runs(runs: Sequence[BatchRun], as_json: bool) -> None:
    windows = [w for run in runs for w in run.windows]
    failed = [w for w in windows if w.status is not RunStatus.SUCCEEDED]
    if as_json:
        _print_json(
            {
                "runs": [
                    {
                        "job": w.job,
                        "start": _when(w.window.start),
                        "stop": _when(w.window.stop),
                        "status": w.status.value,
                        "attempts": w.attempts,
                        "error": w.error,
                    }
                    for w in windows
                ],
                "succeeded": len(windows) - len(failed),
                "failed": len(failed),
            }
        )
    else:
        _print_run_tables(runs, failed)
    if failed:
        raise typer.Exit(1)


def _print_run_tables(runs: Sequence[BatchRun], failed: Sequence[WindowRun]) -> None:
    """People get one line per job, and every failed window spelled out."""
    table = Table("job", "from", "to", "windows", "queries", "succeeded", "failed", "points")
    for job in dict.fromkeys(run.job for run in runs):
        mine = [run for run in runs if run.job == job]
        count = sum(len(run.batch.windows) for run in mine)
        bad = sum(len(run.batch.windows) for run in mine if run.status is not RunStatus.SUCCEEDED)
        table.add_row(
            job,
            _when(mine[0].batch.range.start),
            _when(mine[-1].batch.range.stop),
            str(count),
            str(len(mine)),
            Text(str(count - bad), style="green"),
            Text(str(bad), style="red") if bad else "0",
            f"{sum(run.points_written for run in mine):,}",
        )
    if runs:
        out.print(table)
    if failed:
        errors = Table("job", "start", "stop", "attempts", "error", title="failed windows")
        for w in failed:
            errors.add_row(
                w.job, _when(w.window.start), _when(w.window.stop), str(w.attempts), w.error or ""
            )
        out.print(errors)
    windows = sum(len(run.batch.windows) for run in runs)
    out.print(
        f"{_plural(windows - len(failed), 'window')} succeeded, {len(failed):,} failed, "
        f"{_plural(len(runs), 'query', 'queries')}, "
        f"{_plural(sum(run.points_written for run in runs), 'point')} written"
    )


@app.command("run-once")
def run_once(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run every due window once, record each; exit 1 if any failed."""
    with _errors():
        loaded = load_config(config)
        at = _instant(now, "--now")
        runner = _checked_runner(loaded, jobs)
        runner.check_fields = True
        plans = runner.plan(at, jobs)
        total = sum(len(p.windows) + len(p.skipped) for p in plans)
        with _progress(runner, total, as_json):
            runs: list[BatchRun] = _run(runner, lambda r: r.run_due(at, jobs))
    _report_runs(runs, as_json)


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    trace_memory: Annotated[
        float | None,
        typer.Option(
            "--trace-memory",
            help="Log RSS and the top allocation sites every N seconds (tracemalloc).",
            min=0.1,
        ),
    ] = None,
) -> None:
    """Run as a daemon: every job's windows as they become due, until SIGTERM or SIGINT.

    The first signal stops new windows and lets those in flight finish within [scheduler] grace;
    a second one exits at once (windows in flight stay claimed until their lease expires)."""
    from tierflow._daemon import Daemon, MetricsServer

    with _errors():
        loaded = load_config(config)
        runner = _checked_runner(loaded)

    async def serve() -> None:
        daemon = Daemon(runner)
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            if daemon.stopping.is_set():
                log_event("second_signal_exit", level=logging.WARNING, signal=signum.name)
                os._exit(1)
            log_event("signal_received", signal=signum.name)
            daemon.stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        server = MetricsServer(runner, loaded.server) if loaded.server else None
        tracer = None
        if trace_memory is not None:
            from tierflow._memtrace import trace_memory as tracing

            tracer = asyncio.create_task(tracing(trace_memory))
        try:
            if server is not None:
                await server.start()
            await daemon.run()
        finally:
            if tracer is not None:
                tracer.cancel()
            if server is not None:
                await server.stop()
            await runner.aclose()
            runner.store.close()

    with _errors():
        try:
            asyncio.run(serve())
        except OSError as exc:
            raise BadInput(f"cannot serve metrics on {loaded.server}: {exc.strerror}") from exc


@app.command()
def backfill(
    job: Annotated[str, typer.Argument(help="The job to re-run.")],
    start: Annotated[str, typer.Option("--from", help="Range start (RFC 3339).")],
    stop: Annotated[str, typer.Option("--to", help="Range end, exclusive (RFC 3339).")],
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run the job's windows that overlap [--from, --to), whatever the watermark says."""
    with _errors():
        loaded = load_config(config)
        begin, end, at = _instant(start, "--from"), _instant(stop, "--to"), _instant(now, "--now")
        if begin >= end:
            raise BadInput(f"--from {start} is not before --to {stop}")
        runner = _runner(loaded, [job])
        batches = runner.backfill_batches(job, begin, end, at)
        with _progress(runner, sum(len(b.windows) for b in batches), as_json):
            runs: list[BatchRun] = _run(runner, lambda r: r.backfill(job, begin, end, at))
    _report_runs(runs, as_json)


@app.command()
def retry(
    job: Annotated[str, typer.Argument(help="The job whose parked windows to re-queue.")],
    start: Annotated[str | None, typer.Option("--from", help="Range start (RFC 3339).")] = None,
    stop: Annotated[str | None, typer.Option("--to", help="Range end, exclusive.")] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every parked window of the job.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Re-queue windows parked after max_window_attempts failures: they run again on the next
    run-once or daemon cycle, with a fresh attempt budget."""
    with _errors():
        if all_failed == (start is not None or stop is not None):
            raise BadInput("give either --from and --to, or --all-failed")
        if not all_failed and (start is None or stop is None):
            raise BadInput("--from and --to go together")
        loaded = load_config(config)
        begin = _instant(start, "--from") if start else None
        end = _instant(stop, "--to") if stop else None
        runner = _runner(loaded, [job])
        try:
            count = runner.requeue(job, begin, end)
        finally:
            runner.store.close()
    if as_json:
        _print_json({"job": job, "requeued": count})
    else:
        out.print(f"{_plural(count, 'parked window')} of {job} re-queued")


@app.command()
def reset(
    job: Annotated[str, typer.Argument(help="The job to start again.")],
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="Forget from the window holding this instant on (default: all)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be forgotten; change nothing.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Start a job again, e.g. after changing its dest or aggregates: forget its ledger and
    watermark from --from on (default: all of it) and record its current definition, so the
    next run writes those windows under it. Deletes nothing in InfluxDB or the archive."""
    from tierflow._definitions import reset_job

    with _errors():
        loaded = load_config(config)
        since = _instant(start, "--from") if start is not None else None
        runner = _runner(loaded, [job])
        try:
            done = reset_job(loaded, runner.store, job, since, dry_run=dry_run)
        finally:
            runner.store.close()
    if as_json:
        _print_json(
            {
                "job": job,
                "dry_run": dry_run,
                "from": _when(done.since),
                "windows_forgotten": done.windows,
                "watermark_before": _when(done.watermark_before),
                "watermark_after": _when(done.watermark_after),
                "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in done.changes],
            }
        )
        return
    for change in done.changes:
        out.print(f"  {change}")
    span = f"from {_when(done.since)} on" if done.since else "all of it"
    verb = "would forget" if dry_run else "forgot"
    marks = (
        f"watermark {_when(done.watermark_before) or '-'} → {_when(done.watermark_after) or '-'}"
    )
    out.print(f"{job}: {verb} {_plural(done.windows, 'ledger window')} ({span}); {marks}")
    if dry_run:
        out.print("dry run: nothing changed")
    else:
        out.print(
            "definition recorded; no data was deleted: the next run writes those windows again"
        )


@app.command()
def status(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per job: watermark, lag, last status, failed and pending windows, and whether the job
    was redefined since its ledger was recorded."""
    from tierflow._definitions import check_definitions

    with _errors():
        loaded = load_config(config)
        at = _instant(now, "--now")
        runner = _runner(loaded, jobs)
        try:
            rows = runner.status(at, jobs)
            checks = {c.job: c for c in check_definitions(loaded, runner.store, jobs)}
        finally:
            runner.store.close()
    body: list[dict[str, Any]] = [
        {
            "job": s.job,
            "watermark": _when(s.watermark),
            "lag_seconds": s.lag_seconds,
            "last_status": s.last_status.value if s.last_status else None,
            "failed_windows": s.failed_windows,
            "pending_windows": s.pending_windows,
            "rechecked_windows": s.rechecked_windows,
            "parked_windows": s.parked_windows,
            "expiry_risk": s.expiry_risk,
            "windows_at_risk": s.windows_at_risk,
            "windows_lost": s.windows_lost,
            "definition": _definition_json(checks[s.job]),
        }
        for s in rows
    ]
    if as_json:
        _print_json({"now": _when(at), "jobs": body})
        return
    table = Table(
        "job",
        "watermark",
        "lag",
        "last status",
        "failed",
        "parked",
        "pending",
        "at risk (lost)",
        "re-aggregated (late data)",
        "definition",
        title=f"tierflow status at {_when(at)}",
    )
    for row in body:
        table.add_row(
            row["job"],
            row["watermark"] or "-",
            f"{row['lag_seconds']:.0f}s",
            row["last_status"] or "-",
            str(row["failed_windows"]),
            str(row["parked_windows"]),
            str(row["pending_windows"]),
            Text(f"{row['windows_at_risk']} ({row['windows_lost']})", style="bold red")
            if row["expiry_risk"]
            else "0",
            str(row["rechecked_windows"]),
            _definition_cell(row["definition"]),
        )
    out.print(table)
    _print_redefined(checks.values())


def _definition_cell(definition: dict[str, Any]) -> Text | str:
    if definition["state"] == "changed":
        keys = ", ".join(change["key"] for change in definition["changes"])
        return Text(f"changed: {keys}", style="bold red")
    return {"same": "recorded", "new": "new", "unrecorded": "not recorded yet"}[definition["state"]]


@app.command()
def history(
    job: Annotated[str, typer.Argument(help="The job.")],
    config: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many attempts.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The job's latest attempts, newest first."""
    with _errors():
        loaded = load_config(config)
        runner = _runner(loaded, [job])
        try:
            attempts = runner.store.history(job, limit=limit)
        finally:
            runner.store.close()
    body: list[dict[str, Any]] = [
        {
            "start": _when(a.window.start),
            "stop": _when(a.window.stop),
            "attempt": a.attempt,
            "status": a.status.value,
            "started_at": _when(a.started_at),
            "finished_at": _when(a.finished_at),
            "duration_s": a.duration_s,
            "query_hash": a.query_hash,
            "template_version": a.template_version,
            "error": a.error,
            "run_id": a.run_id,
            "reason": a.reason,
        }
        for a in attempts
    ]
    if as_json:
        _print_json({"job": job, "attempts": body})
        return
    table = Table(
        "start",
        "stop",
        "attempt",
        "status",
        "reason",
        "started",
        "duration",
        "template",
        "error",
        title=f"history of {job}",
    )
    # Newest first: a version unlike the attempt below it (the one before it in time) is where
    # the template changed, marked so it shows at a glance.
    versions = [row["template_version"] for row in body]
    for index, row in enumerate(body):
        duration = f"{row['duration_s']:.3f}s" if row["duration_s"] is not None else "-"
        older = next((v for v in versions[index + 1 :] if v), None)
        changed = bool(row["template_version"] and older and older != row["template_version"])
        table.add_row(
            row["start"],
            row["stop"],
            str(row["attempt"]),
            row["status"],
            row["reason"],
            row["started_at"],
            duration,
            (row["template_version"] or "-") + (" (changed)" if changed else ""),
            row["error"] or "",
        )
    out.print(table)


archive_app = typer.Typer(help="The cold tier: check and query the Parquet archive.")
app.add_typer(archive_app, name="archive")


def _cold_tier(config: Config, tier: str) -> None:
    spec = config.tiers.get(tier)
    if spec is None or not spec.is_archive:
        cold = [name for name, t in config.tiers.items() if t.is_archive]
        raise BadInput(
            f"{tier!r} is not a cold tier of {config.path}; cold tiers: {', '.join(cold) or 'none'}"
        )


def _archive(config: Path, tier: str) -> ParquetArchive:
    """The archive of cold tier `tier` in the config at `config` (bad input if it is not one)."""
    from tierflow._archiving import Archives

    loaded = load_config(config)
    _cold_tier(loaded, tier)
    return Archives(loaded)(tier)


@archive_app.command("verify")
def archive_verify(
    tier: Annotated[str, typer.Argument(help="The cold tier.")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Re-check every archived file (exists, checksum, row count); exit 1 naming each bad one."""
    with _errors():
        problems = _archive(config, tier).verify()
    if as_json:
        _print_json({"tier": tier, "ok": not problems, "problems": [str(p) for p in problems]})
    else:
        for problem in problems:
            err.print(str(problem))
        out.print(f"{tier}: {'ok' if not problems else _plural(len(problems), 'bad file')}")
    if problems:
        raise typer.Exit(1)


@archive_app.command("query")
def archive_query(
    tier: Annotated[str, typer.Argument(help="The cold tier.")],
    sql: Annotated[str, typer.Argument(help='SQL; each measurement is a table, e.g. "cpu".')],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Run SQL over the archive with DuckDB (extra tierflow[archive-query]), no restore needed."""
    with _errors():
        result = _archive(config, tier).query(sql)
    if as_json:
        _print_json({"columns": list(result.columns), "rows": [list(r) for r in result.rows]})
        return
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


@app.command()
def restore(
    tier: Annotated[str, typer.Argument(help="The cold tier to read.")],
    start: Annotated[str, typer.Option("--from", help="Range start (RFC 3339).")],
    stop: Annotated[str, typer.Option("--to", help="Range end, exclusive (RFC 3339).")],
    into: Annotated[str, typer.Option("--into", help="The live tier to write into.")],
    measurement: Annotated[
        str | None, typer.Option("--measurement", help="Only this measurement.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Write archived points back into a live tier, point for point, field types kept. A
    measurement the live tier refuses (e.g. a field type conflict) is named with its field and
    first offending point and left out; the others are restored; exit 1 if any was refused."""
    from tierflow._archiving import Archives
    from tierflow._archiving import restore as restore_range
    from tierflow._engines import engine_for
    from tierflow._lineprotocol import ns_isoformat

    with _errors():
        loaded = load_config(config)
        _cold_tier(loaded, tier)
        target = loaded.tiers.get(into)
        if target is None or target.is_archive:
            raise BadInput(f"--into {into!r} is not a live tier of {config}")
        begin, end = _instant(start, "--from"), _instant(stop, "--to")
        if begin >= end:
            raise BadInput(f"--from {start} is not before --to {stop}")
        connection = loaded.connections[target.connection]
        archive = Archives(loaded)(tier)

        async def go() -> Any:
            engine = engine_for(target.connection, connection)
            try:
                return await restore_range(
                    archive,
                    engine,
                    target,
                    start=begin,
                    stop=end,
                    measurement=measurement,
                    max_concurrency=connection.max_concurrency,
                )
            finally:
                await engine.aclose()

        moved = asyncio.run(go())
    if as_json:
        _print_json(
            {
                "points": moved.points,
                "dropped": moved.dropped,
                "bytes": moved.bytes_sent,
                "requests": moved.requests,
                "failures": [
                    {
                        "measurement": failure.measurement,
                        "column": failure.column,
                        "time": ns_isoformat(failure.time_ns),
                        "error": failure.reason,
                    }
                    for failure in moved.failures
                ],
            }
        )
    else:
        out.print(
            f"restored {_plural(moved.points, 'point')} into {into} "
            f"({moved.requests} requests, {moved.bytes_sent:,} bytes)"
        )
        for failure in moved.failures:
            # One line each: a server's message may quote a line whose strings hold newlines.
            text = str(failure).replace("\r", "\\r").replace("\n", "\\n")
            err.print(Text.assemble(("error:", "bold red"), " not restored: ", text))
    if moved.failures:
        raise typer.Exit(1)


@app.command("apply")
def apply_tiers(
    config: ConfigOption = DEFAULT_CONFIG,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Shrink a retention even below what a job still needs."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make the declared tiers real: databases and retention policies (1.x), buckets (2.x),
    archive directories. Creates what is missing, updates what differs, never deletes; exit 2
    with nothing changed if any tier cannot be applied as declared, e.g. a retention shrinking
    below a job's oldest pending window (unless --force)."""
    from tierflow._apply import Action, ApplyRefusedError
    from tierflow._apply import apply_tiers as apply_all

    with _errors():
        loaded = load_config(config)
        try:
            changes = asyncio.run(apply_all(loaded, now=utc_now(), dry_run=dry_run, force=force))
        except ApplyRefusedError as exc:
            raise BadInput(str(exc)) from None
    if as_json:
        _print_json({"changes": [change.as_json() for change in changes]})
        return
    table = Table("tier", "action", "detail", title="dry run: nothing changed" if dry_run else None)
    for change in changes:
        table.add_row(change.tier, change.action.value, change.detail)
    out.print(table)
    counts = {action: sum(c.action is action for c in changes) for action in Action}
    verbs = ("to create", "to update") if dry_run else ("created", "updated")
    out.print(
        f"{_plural(len(changes), 'tier')}: {counts[Action.CREATE]} {verbs[0]}, "
        f"{counts[Action.UPDATE]} {verbs[1]}, {counts[Action.NONE]} unchanged"
    )


def _version(value: bool) -> None:
    if value:
        out.print(f"tierflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", envvar="TIERFLOW_LOG_LEVEL", help="debug, info, warning, error."
        ),
    ] = "warning",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    configure_logging(log_level)


def main() -> None:
    app()
