"""How `run-once`, `backfill` and the other window-running commands report: a progress bar at a
terminal, then a table per job (people) or every window (`--json`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer
from rich.table import Table
from rich.text import Text

from tierflow._cli_common import out, plural, print_json, when
from tierflow._runner import BatchRun, Runner, WindowRun
from tierflow._state import RunStatus

__all__ = ["progress", "report_runs"]


@contextmanager
def progress(runner: Runner, total: int, as_json: bool) -> Iterator[None]:
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


def report_runs(runs: Sequence[BatchRun], as_json: bool) -> None:
    """Print what ran; exit 1 if any window failed."""
    windows = [w for run in runs for w in run.windows]
    failed = [w for w in windows if w.status is not RunStatus.SUCCEEDED]
    if as_json:
        print_json(
            {
                "runs": [
                    {
                        "job": w.job,
                        "start": when(w.window.start),
                        "stop": when(w.window.stop),
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
    """People get one line per job, and one per job and error for the failed windows."""
    table = Table("job", "from", "to", "windows", "queries", "succeeded", "failed", "points")
    for job in dict.fromkeys(run.job for run in runs):
        mine = [run for run in runs if run.job == job]
        count = sum(len(run.batch.windows) for run in mine)
        bad = sum(len(run.batch.windows) for run in mine if run.status is not RunStatus.SUCCEEDED)
        table.add_row(
            job,
            when(mine[0].batch.range.start),
            when(mine[-1].batch.range.stop),
            str(count),
            str(len(mine)),
            Text(str(count - bad), style="green"),
            Text(str(bad), style="red") if bad else "0",
            f"{sum(run.points_written for run in mine):,}",
        )
    if runs:
        out.print(table)
    if failed:
        out.print(_failure_table(failed))
    windows = sum(len(run.batch.windows) for run in runs)
    out.print(
        f"{plural(windows - len(failed), 'window')} succeeded, {len(failed):,} failed, "
        f"{plural(len(runs), 'query', 'queries')}, "
        f"{plural(sum(run.points_written for run in runs), 'point')} written"
    )


def _failure_table(failed: Sequence[WindowRun]) -> Table:
    """One row per job and error: how many windows, the first and the last (200 windows failing
    for one reason are one row; `--json` lists every window)."""
    groups: dict[tuple[str, str], list[WindowRun]] = {}
    for w in failed:
        groups.setdefault((w.job, w.error or ""), []).append(w)
    table = Table(
        "job", "windows", "first window", "last window", "attempts", "error", title="failed windows"
    )
    for (job, error), runs in groups.items():
        first = min(runs, key=lambda w: w.window.start).window
        last = max(runs, key=lambda w: w.window.start).window
        attempts = sorted({w.attempts for w in runs})
        table.add_row(
            job,
            str(len(runs)),
            when(first.start),
            when(last.start) if len(runs) > 1 else "",
            "-".join(map(str, (attempts[0], attempts[-1]) if len(attempts) > 1 else attempts)),
            error,
        )
    return table
