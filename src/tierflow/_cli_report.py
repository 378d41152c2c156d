"""How `plan`, `run-once`, `backfill` and the other window-running commands report: the batches
a plan runs, a progress bar at a terminal, then a table per job (people) or every window
(`--json`)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from tierflow._cli_common import err, out, plural, print_json, when
from tierflow._config import Config
from tierflow._planner import Batch
from tierflow._runner import BatchRun, JobPlan, Runner, WindowRun
from tierflow._state import LedgerEntry, RunStatus
from tierflow._status import workers_json

__all__ = [
    "claims_table",
    "compact_duration",
    "plan_json",
    "print_plan",
    "progress",
    "report_runs",
    "shows_progress",
    "status_table",
    "workers_json",
    "workers_table",
]


def plan_json(
    config: Config, plan: JobPlan, definition: dict[str, Any] | None, windows: bool
) -> dict[str, Any]:
    """A job's plan as `plan --json` has it: counts, then its batches oldest first, each with
    its range, its window count and its query (rendered once per batch; None for windows
    max_catchup skips); with `windows`, each batch lists its windows too."""
    from tierflow._jobs import render_job

    def batch(run: Batch, action: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "action": action,
            "start": when(run.first.start),
            "stop": when(run.stop),
            "window_count": run.count,
            "query": render_job(config, plan.job, run).text if action == "run" else None,
        }
        if windows:
            item["windows"] = [{"start": when(w.start), "stop": when(w.stop)} for w in run.windows]
        return item

    spec = config.jobs[plan.job]
    return {
        "job": plan.job,
        # A pattern is resolved per window when it runs: a run batch's query lists them.
        **({"measurements": spec.measurement_pattern} if spec.measurement_pattern else {}),
        "definition": definition,
        "windows_due": plan.window_count,
        "windows_skipped": plan.skipped_count,
        "queries": len(plan.batches),
        "batches": [batch(run, "skip") for run in plan.skipped]
        + [batch(run, "run") for run in plan.batches],
    }


def print_plan(jobs: Sequence[Mapping[str, Any]], at: datetime) -> None:
    """`plan` for people: per job a line of counts, then each batch's range and window count,
    its windows (if listed) and its query."""
    lines: list[str | Text] = []
    for job in jobs:
        skipped = (
            f"; {plural(job['windows_skipped'], 'window')} older than max_catchup skipped"
            if job["windows_skipped"]
            else ""
        )
        lines.append(
            Text.assemble(
                (job["job"], "bold"),
                f": {plural(job['windows_due'], 'window')} due at {when(at)}, in "
                f"{plural(job['queries'], 'query', 'queries')}{skipped}",
            )
        )
        if "measurements" in job:
            lines.append(
                f"  measurements {job['measurements']}: resolved per window when it runs, "
                "by the listing query shown"
            )
        for batch in job["batches"]:
            skip = "  (skip: older than max_catchup)" if batch["action"] == "skip" else ""
            count = plural(batch["window_count"], "window")
            lines.append(f"  [{batch['start']}, {batch['stop']})  {count}{skip}")
            lines += [f"    [{w['start']}, {w['stop']})" for w in batch.get("windows", ())]
            if batch["query"] is not None:
                # Flux keeps its lines: indent each one, not just the first.
                lines.append(Text(textwrap.indent(batch["query"], "    "), style="dim"))
    # One print: a year of batches is tens of thousands of lines, each print its own cost.
    out.print(Text("\n").join(Text(line) if isinstance(line, str) else line for line in lines))


def shows_progress(as_json: bool) -> bool:
    """Whether `progress` shows a bar: for people at a terminal only."""
    return not as_json and sys.stdout.isatty()


@contextmanager
def progress(runner: Runner, total: int, as_json: bool) -> Iterator[None]:
    """A progress bar (windows done / total, rate, ETA) for people at a terminal, and only then."""
    if total == 0 or not shows_progress(as_json):
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


def report_runs(runs: Sequence[BatchRun], as_json: bool, held: Sequence[LedgerEntry] = ()) -> None:
    """Print what ran; exit 1 if any window failed or a due window was left to another run."""
    # Windows one by one only where needed: the failed ones, and every one for --json.
    failed = [w for run in runs if run.status is not RunStatus.SUCCEEDED for w in run.windows]
    if held:
        _report_held(held)
    if as_json:
        windows = sum(run.batch.count for run in runs)
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
                    for run in runs
                    for w in run.windows
                ],
                "succeeded": windows - len(failed),
                "failed": len(failed),
                "not_taken": _held_json(held),
            }
        )
    else:
        _print_run_tables(runs, failed)
    if failed or held:
        raise typer.Exit(1)


def _held_json(held: Sequence[LedgerEntry]) -> list[dict[str, Any]]:
    return [
        {
            "job": e.job,
            "start": when(e.window.start),
            "stop": when(e.window.stop),
            "status": e.status.value,
            "run_id": e.run_id,
            "holder": {"host": e.holder.host, "pid": e.holder.pid} if e.holder else None,
            "lease_expires_at": when(e.lease_expires_at),
        }
        for e in held
    ]


def _report_held(held: Sequence[LedgerEntry]) -> None:
    """Say which due windows this run could not take, and why (on stderr: the table is stdout)."""
    for e in held:
        if e.status is RunStatus.RUNNING:
            who = str(e.holder) if e.holder else "a run that recorded no holder"
            why = f"held by {who} (run {e.run_id}) until {when(e.lease_expires_at)}"
        else:
            why = f"{e.status.value} in run {e.run_id}, which held it while this run planned"
        err.print(
            f"not taken: {e.job} window {when(e.window.start)} .. {when(e.window.stop)}: {why}"
        )


def _print_run_tables(runs: Sequence[BatchRun], failed: Sequence[WindowRun]) -> None:
    """People get one line per job, and one per job and error for the failed windows."""
    table = Table("job", "from", "to", "windows", "queries", "succeeded", "failed", "points")
    for job in dict.fromkeys(run.job for run in runs):
        mine = [run for run in runs if run.job == job]
        count = sum(run.batch.count for run in mine)
        bad = sum(run.batch.count for run in mine if run.status is not RunStatus.SUCCEEDED)
        table.add_row(
            job,
            when(mine[0].batch.first.start),
            when(mine[-1].batch.stop),
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
    windows = sum(run.batch.count for run in runs)
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


def compact_duration(seconds: float) -> str:
    """At most two units, rounded down: `45s`, `2h13m`, `3d4h` (not `7980s`)."""
    left = int(seconds)
    if left < 60:
        return f"{max(left, 0)}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    return "".join(part for part in parts[:2] if not part.startswith("0"))


def _short_time(text: str | None, at: datetime) -> str:
    """`01-01 16:35` in the year of `at` (the title names it), the date alone otherwise."""
    if text is None:
        return "-"
    moment = datetime.fromisoformat(text)
    if moment.year != at.year:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%m-%d %H:%M:%S" if moment.second else "%m-%d %H:%M")


def status_table(rows: Sequence[Mapping[str, Any]], at: datetime) -> Table:
    """`tierflow status` for people, within 80 columns (`--json` has every value in full)."""
    table = Table(
        Column("job", overflow="fold"),  # a long name wraps rather than losing its end
        "watermark",
        "lag",
        "last",
        "fail",
        "park",
        "pend",
        "risk",
        "late",
        "next",
        title=f"tierflow status at {when(at)}",
        caption="windows failed, parked, pending; at risk of expiring (lost); re-run for late "
        "data. next: when the job next has work"
        + ("; job!: redefined (see below)" if any(_redefined(row) for row in rows) else ""),
        # The box's blank separators are the only space between columns: 80 columns hold all ten.
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    for row in rows:
        due = datetime.fromisoformat(row["next_due"])
        table.add_row(
            _job_cell(row),
            _short_time(row["watermark"], at),
            compact_duration(row["lag_seconds"]),
            row["last_status"] or "-",
            str(row["failed_windows"]),
            str(row["parked_windows"]),
            str(row["pending_windows"]),
            Text(f"{row['windows_at_risk']} ({row['windows_lost']})", style="bold red")
            if row["expiry_risk"]
            else "0",
            str(row["rechecked_windows"]),
            "now" if due <= at else "in " + compact_duration((due - at).total_seconds()),
        )
    return table


def _job_cell(row: Mapping[str, Any]) -> Text | str:
    """The job's name, marked `!` when it was redefined since its ledger was recorded (the line
    under the table says what changed): a mark, not a column, to stay within 80 columns."""
    if _redefined(row):
        return Text.assemble(row["job"], ("!", "bold red"))
    return str(row["job"])


def _redefined(row: Mapping[str, Any]) -> bool:
    definition = row.get("definition")
    return definition is not None and definition["state"] == "changed"


def claims_table(body: Sequence[Mapping[str, Any]]) -> Table | None:
    """The running windows under the status table: who holds them, until when."""
    claims = [(row["job"], claim) for row in body for claim in row["claims"]]
    if not claims:
        return None
    table = Table("job", "start", "stop", "holder", "run", "lease until", title="running windows")
    for job, c in claims:
        holder = c["holder"]
        table.add_row(
            job,
            c["start"],
            c["stop"],
            f"pid {holder['pid']} on {holder['host']}" if holder else "-",
            c["run_id"] or "-",
            f"{c['lease_expires_at']}" + (" (stale: taken over next run)" if c["stale"] else ""),
        )
    return table


def workers_table(workers: Sequence[Mapping[str, Any]], at: datetime) -> Table | None:
    """The workers under the status tables: who runs, since when, when each last beat."""
    if not workers:
        return None
    styles = {"live": "green", "gone": "bold red", "stopped": "dim"}
    table = Table(
        Column("host", overflow="fold"),
        Column("pid", justify="right"),
        "version",
        Column("state", no_wrap=True),
        Column("since", no_wrap=True),
        Column("last beat", no_wrap=True),
        Column("running", justify="right"),
        title="workers seen in the last hour",
        caption="running: windows it holds; gone: no beat for 30s (killed, paused, cut off)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    for w in workers:
        ago = (at - datetime.fromisoformat(w["last_seen"])).total_seconds()
        table.add_row(
            w["host"],
            str(w["pid"]),
            w["version"],
            Text(w["state"], style=styles[w["state"]]),
            _short_time(w["started_at"], at),
            f"{compact_duration(ago)} ago" if ago >= 0 else "-",
            str(w["running_windows"]),
        )
    return table
