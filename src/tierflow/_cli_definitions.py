"""Job definitions on the command line: `tierflow reset`, and how `plan` and `status` report a job
redefined since its ledger was recorded (see `tierflow._definitions`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from tierflow._cli_common import (
    ConfigOption,
    JsonOption,
    instant,
    out,
    plural,
    print_json,
    run_command,
    when,
)
from tierflow._config import DEFAULT_CONFIG
from tierflow._status import definition_json

if TYPE_CHECKING:
    from tierflow._definitions import DefinitionCheck

__all__ = ["definition_json", "print_redefined", "register"]


def register(app: typer.Typer) -> None:
    """Add `reset` to the `tierflow` app."""
    app.command()(reset)


def print_redefined(checks: Iterable[DefinitionCheck]) -> None:
    """One line per redefined job: what changed, and what `run` will do about it."""
    from tierflow._definitions import summary

    for check in checks:
        if check.state == "changed":
            out.print(Text.assemble((check.job, "bold"), ": ", summary(check), style="red"))


def reset(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job to start again.")],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="TS",
            help="Forget from the window holding this instant on (default: all).",
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

    since = instant(start, "--from") if start is not None else None
    done = run_command(
        config, lambda loaded, tf: reset_job(loaded, tf.store, job, since, dry_run=dry_run), [job]
    )
    if as_json:
        print_json(
            {
                "job": job,
                "dry_run": dry_run,
                "from": when(done.since),
                "windows_forgotten": done.windows,
                "watermark_before": when(done.watermark_before),
                "watermark_after": when(done.watermark_after),
                "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in done.changes],
            }
        )
        return
    for change in done.changes:
        out.print(f"  {change}")
    span = f"from {when(done.since)} on" if done.since else "all of it"
    verb = "would forget" if dry_run else "forgot"
    marks = f"watermark {when(done.watermark_before) or '-'} → {when(done.watermark_after) or '-'}"
    out.print(f"{job}: {verb} {plural(done.windows, 'ledger window')} ({span}); {marks}")
    if dry_run:
        out.print("dry run: nothing changed")
    else:
        out.print(
            "definition recorded; no data was deleted: the next run writes those windows again"
        )
