"""The `tierflow` command: parse, call the library, print (rich tables for people, --json for
machines). Exit codes: 0 done, 1 some window failed, 2 bad input (config, arguments)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tierflow import __version__
from tierflow._api import Tierflow
from tierflow._cli_archive import register as register_archive_commands
from tierflow._cli_common import (
    ConfigOption,
    JobsArgument,
    JsonOption,
    NowOption,
    err,
    fail,
    instant,
    out,
    plural,
    print_json,
    run_command,
    when,
)
from tierflow._cli_definitions import print_redefined
from tierflow._cli_definitions import register as register_definition_commands
from tierflow._cli_group import TierflowGroup
from tierflow._cli_import import register as register_import_commands
from tierflow._cli_report import (
    claims_table,
    plan_json,
    print_plan,
    progress,
    report_runs,
    shows_progress,
    status_table,
    workers_table,
)
from tierflow._clock import utc_now
from tierflow._config import DEFAULT_CONFIG, Config
from tierflow._logging import configure_logging
from tierflow._runner import BatchRun, Runner
from tierflow._state import LedgerEntry
from tierflow._status import definition_json

if TYPE_CHECKING:
    from tierflow._api import Validation
    from tierflow._definitions import DefinitionCheck

__all__ = ["app", "main"]

app = typer.Typer(
    cls=TierflowGroup,
    name="tierflow",
    help="Run the life of InfluxDB time-series data: downsample, archive, restore.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
def validate(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also ask each server: databases and retention policies (1.x), buckets and "
            "Flux syntax (2.x), and each downsample field and its type in the source.",
        ),
    ] = False,
) -> None:
    """Check the config, the optional packages it needs, every job's query for a sample window,
    and (when the state store exists) that no job was redefined since its ledger was recorded;
    exit 0 if all is well (warnings, e.g. a start in the future, on stderr), 2 with every
    problem listed if not, 1 if a server could not be asked (--online)."""

    async def work(loaded: Config, tf: Tierflow) -> tuple[Config, Validation]:
        return loaded, await tf.validate(online=online)

    loaded, found = run_command(config, work)
    problems, cautions = found.problems, list(found.warnings)
    if problems:
        listing = "\n".join("  " + problem.render() for problem in problems)
        code = 2 if any(not problem.unreachable for problem in problems) else 1
        fail(f"{config}: {len(problems)} problem(s)\n{listing}", code)
    for caution in cautions:
        err.print(Text.assemble(("warning:", "bold yellow"), " ", caution))
    if as_json:
        print_json(
            {"valid": True, "config": str(config), "jobs": list(loaded.jobs), "warnings": cautions}
        )
    else:
        out.print(f"{config}: valid ({len(loaded.jobs)} job(s), {len(loaded.tiers)} tier(s))")


@app.command()
def plan(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
    windows: Annotated[
        bool,
        typer.Option("--windows", help="Also list every window of each batch."),
    ] = False,
) -> None:
    """Show what runs now (or at --now) per job: the batches of due windows, each with its
    range, how many windows it covers and the exact query that runs them; --windows lists
    every window too."""
    from tierflow._definitions import check_definitions

    at = instant(now, "--now")

    async def read(
        loaded: Config, tf: Tierflow
    ) -> tuple[dict[str, Any], dict[str, DefinitionCheck]]:
        plans = await tf.plan(at, jobs)
        checks = {c.job: c for c in await check_definitions(loaded, tf.store, jobs)}
        body = {
            "now": when(at),
            "jobs": [plan_json(loaded, p, definition_json(checks[p.job]), windows) for p in plans],
        }
        return body, checks

    body, checks = run_command(config, read, jobs)
    if as_json:
        print_json(body)
        return
    print_redefined(checks.values())
    print_plan(body["jobs"], at)


@app.command("run-once")
def run_once(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait for due windows other runs hold (until they finish them, or their holder "
            "dies or its lease expires, then take them over) instead of leaving them.",
        ),
    ] = False,
) -> None:
    """Run every due window once, record each; exit 1 if any failed, or if another run holds
    some (each is named, with its holder and lease) and --wait was not given."""
    at = instant(now, "--now")

    async def work(_: Config, tf: Tierflow) -> tuple[list[BatchRun], list[LedgerEntry]]:
        total = await tf.runner.due_count(at, jobs) if shows_progress(as_json) else 0
        with progress(tf.runner, total, as_json):
            return await tf.run_once(jobs, at, wait=wait), await tf.held()

    runs, held = run_command(config, work, jobs, checked=True)
    report_runs(runs, as_json, held)


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    trace_memory: Annotated[
        float | None,
        typer.Option(
            "--trace-memory",
            metavar="SECONDS",
            help="Log RSS and the top allocation sites every N seconds (tracemalloc).",
            min=0.1,
        ),
    ] = None,
) -> None:
    """Run as a daemon: every job's windows as they become due, until SIGTERM or SIGINT.

    The first signal stops new windows and lets those in flight finish within [scheduler] grace;
    a second one exits at once (windows in flight stay claimed until their lease expires).
    SIGHUP reloads the config file (a bad one is logged and the running one kept).
    At a terminal: a line per batch and a catch-up progress bar; otherwise JSON log lines."""
    from tierflow._daemon import hold_hangups, serve

    hold_hangups()  # a reload asked for while starting is kept for the running daemon
    from tierflow._terminal import DaemonDisplay

    # A person at a terminal sees batches and the catch-up; a log level below warning asks for
    # the log lines instead, and machines (no terminal) get the JSON ones.
    quiet = logging.getLogger("tierflow").getEffectiveLevel() >= logging.WARNING
    display = DaemonDisplay(err) if err.is_terminal and quiet else None

    async def shown(runner: Runner) -> None:
        if display is not None:
            display.attach()
            runner.on_progress = display.advance
            display.catch_up(await runner.due_count(utc_now()))

    run_command(
        config,
        lambda loaded, _: serve(
            loaded,
            trace_memory=trace_memory,
            on_started=shown,
            on_stopped=display.close_bar if display is not None else None,
        ),
    )


@app.command()
def backfill(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job to re-run.")],
    start: Annotated[str, typer.Option("--from", metavar="TS", help="Range start (RFC 3339).")],
    stop: Annotated[
        str, typer.Option("--to", metavar="TS", help="Range end, exclusive (RFC 3339).")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run the job's windows that overlap [--from, --to), whatever the watermark says."""
    begin, end, at = instant(start, "--from"), instant(stop, "--to"), instant(now, "--now")
    if begin >= end:
        fail(f"--from {start} is not before --to {stop}", 2)

    async def work(_: Config, tf: Tierflow) -> tuple[list[BatchRun], list[LedgerEntry]]:
        batches = tf.runner.backfill_batches(job, begin, end, at)
        with progress(tf.runner, sum(len(b.windows) for b in batches), as_json):
            return await tf.backfill(job, begin, end, at), await tf.held()

    runs, held = run_command(config, work, [job])
    report_runs(runs, as_json, held)


@app.command()
def retry(
    job: Annotated[
        str, typer.Argument(metavar="JOB", help="The job whose parked windows to re-queue.")
    ],
    start: Annotated[
        str | None, typer.Option("--from", metavar="TS", help="Range start (RFC 3339).")
    ] = None,
    stop: Annotated[
        str | None, typer.Option("--to", metavar="TS", help="Range end, exclusive (RFC 3339).")
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every parked window of the job.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Re-queue windows parked after max_window_attempts failures: they run again on the next
    run-once or daemon cycle, with a fresh attempt budget."""
    if all_failed == (start is not None or stop is not None):
        fail("give either --from and --to, or --all-failed", 2)
    if not all_failed and (start is None or stop is None):
        fail("--from and --to go together", 2)
    begin = instant(start, "--from") if start else None
    end = instant(stop, "--to") if stop else None
    count = run_command(config, lambda _, tf: tf.requeue(job, begin, end), [job])
    if as_json:
        print_json({"job": job, "requeued": count})
    else:
        out.print(f"{plural(count, 'parked window')} of {job} re-queued")


@app.command()
def status(
    jobs: JobsArgument = None,
    config: ConfigOption = DEFAULT_CONFIG,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per job: watermark, lag, last status, failed, parked and pending windows, windows at risk
    of expiring (and lost), late-data re-runs, when the job next has work, and whether it was
    redefined since its ledger was recorded; then the workers (`tierflow run` daemons) seen in
    the last hour: live, gone (stopped beating) or stopped."""
    from tierflow._definitions import check_definitions
    from tierflow._status import status_document

    at = instant(now, "--now")

    async def read(
        loaded: Config, tf: Tierflow
    ) -> tuple[Config, dict[str, Any], list[DefinitionCheck]]:
        # The same document the daemon serves at /api/status (circuits: only it knows them);
        # the definitions read once, for the document and the redefinition notes below.
        found = await check_definitions(loaded, tf.store, jobs)
        document = await status_document(tf.runner, jobs, at, definitions=found)
        return loaded, document, found

    loaded, document, found = run_command(config, read, jobs)
    checks = {c.job: c for c in found}
    body, workers = document["jobs"], document["workers"]
    if as_json:
        print_json(document)
        return
    out.print(status_table(body, at))
    if claims := claims_table(body):
        out.print(claims)
    print_redefined(checks.values())
    if table := workers_table(workers, at):
        out.print(table)
    else:
        out.print("workers: none seen in the last hour (no `tierflow run` beat in this state)")
    # Which state answered: a state file found elsewhere than expected explains odd numbers.
    out.print(f"state: {loaded.state.url}")


@app.command()
def history(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job.")],
    config: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="How many attempts.")
    ] = 50,
    as_json: JsonOption = False,
) -> None:
    """The job's latest attempts, newest first: one row per run of windows claimed together."""
    attempts = run_command(config, lambda _, tf: tf.history(job, limit=limit), [job])
    body: list[dict[str, Any]] = [
        {
            "start": when(a.window.start),
            "stop": when(a.window.stop),
            "windows": a.windows,
            "attempt": a.attempt,
            "status": a.status.value,
            "started_at": when(a.started_at),
            "finished_at": when(a.finished_at),
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
        print_json({"job": job, "attempts": body})
        return
    table = Table(
        "start",
        "stop",
        "windows",
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
            str(row["windows"]),
            str(row["attempt"]),
            row["status"],
            row["reason"],
            row["started_at"],
            duration,
            (row["template_version"] or "-") + (" (changed)" if changed else ""),
            row["error"] or "",
        )
    out.print(table)


register_archive_commands(app)
register_definition_commands(app)
register_import_commands(app)


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
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Shrink a retention even though the server then deletes the data it holds "
            "older than the new one (--force does not).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make the declared tiers real: databases and retention policies (1.x), buckets (2.x),
    archive directories. Creates what is missing, updates what differs, never deletes; exit 2
    with nothing changed if any tier cannot be applied as declared, e.g. a retention shrinking
    below a job's oldest pending window (unless --force) or over data older than the new
    retention, which the server would delete (unless --allow-shrink)."""
    from tierflow._apply import Action

    changes = run_command(
        config, lambda _, tf: tf.apply(dry_run=dry_run, force=force, allow_shrink=allow_shrink)
    )
    if as_json:
        print_json({"changes": [change.as_json() for change in changes]})
        return
    table = Table("tier", "action", "detail", title="dry run: nothing changed" if dry_run else None)
    for change in changes:
        table.add_row(change.tier, change.action.value, change.detail)
    out.print(table)
    counts = {action: sum(c.action is action for c in changes) for action in Action}
    verbs = ("to create", "to update", "to shrink") if dry_run else ("created", "updated", "shrunk")
    shrunk = (
        f"{counts[Action.SHRINK]} {verbs[2]} (deleting data), " if counts[Action.SHRINK] else ""
    )
    out.print(
        f"{plural(len(changes), 'tier')}: {counts[Action.CREATE]} {verbs[0]}, "
        f"{counts[Action.UPDATE]} {verbs[1]}, {shrunk}{counts[Action.NONE]} unchanged"
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
            "--log-level",
            envvar="TIERFLOW_LOG_LEVEL",
            metavar="LEVEL",
            help="debug, info, warning, error (also accepted after the command).",
        ),
    ] = "warning",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(f"{log_level!r} is not one of debug, info, warning, error")
    configure_logging(log_level)
    # Spans are exported only when OTEL_* asks for it (and the `otel` extra is installed).
    from tierflow._tracing import configure_from_env

    configure_from_env()


def main() -> None:
    app()
