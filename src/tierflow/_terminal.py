"""`tierflow run` for a person at a terminal: one line per batch, and a progress bar (totals,
rate, ETA) over the catch-up. Machines (stderr not a terminal) keep the JSON log lines."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tierflow._logging import ConsoleFormatter

__all__ = ["DaemonDisplay"]

_BATCH_EVENTS = ("window_succeeded", "window_failed")


class DaemonDisplay(logging.Handler):
    """Takes the place of the `tierflow` log handler while the daemon runs: batches become one
    line each (whatever the log level), other records at or above `level` are printed as the
    console log would, above the progress bar rather than through it."""

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self.threshold = level
        self._formatter = ConsoleFormatter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._done = 0
        self._total = 0

    def attach(self) -> None:
        """Replace the `tierflow` logger's handlers; batch events (INFO) must reach it."""
        logger = logging.getLogger("tierflow")
        self.threshold = logger.getEffectiveLevel()
        logger.handlers[:] = [self]
        logger.setLevel(min(self.threshold, logging.INFO))

    def catch_up(self, total: int) -> None:
        """Show a bar over the `total` windows due at start (none: no bar)."""
        if total == 0:
            return
        self._total = total
        self._progress = Progress(
            TextColumn("catching up"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("windows"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,
        )
        self._task = self._progress.add_task("catch-up", total=total)
        self._progress.start()
        self._progress.refresh()

    def advance(self, windows: int) -> None:
        """`windows` more are done (the runner's `on_progress`)."""
        if self._progress is None or self._task is None:
            return
        self._done += windows
        self._progress.update(self._task, completed=min(self._done, self._total))
        self._progress.refresh()
        if self._done >= self._total:
            elapsed = self._progress.tasks[0].elapsed or 0.0
            self.close_bar()
            self.console.print(f"caught up: {self._total:,} windows in {elapsed:,.1f}s")

    def close_bar(self) -> None:
        """Stop drawing the bar (it stays on screen as it last was)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self._line(record)
            if line is not None:
                self.console.print(line)
                if self._progress is not None:
                    self._progress.refresh()
        except Exception:  # a display fault must never stop the daemon
            self.handleError(record)

    def _line(self, record: logging.LogRecord) -> Text | None:
        fields = getattr(record, "tierflow_fields", {})
        clock = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        event = record.getMessage()
        if event in _BATCH_EVENTS:
            windows = fields.get("windows", 1)
            head = (
                f"{clock} {fields.get('job')} [{fields.get('window_start')}, "
                f"{fields.get('window_stop')}) {windows} window{'s' if windows != 1 else ''}"
            )
            if event == "window_failed":
                return Text.assemble(head, " ", ("failed", "bold red"), f": {fields.get('error')}")
            return Text(
                f"{head}, {fields.get('points_written', 0):,} points, "
                f"{fields.get('duration_s', 0):.2f}s"
            )
        if event == "daemon_started":
            jobs = fields.get("jobs", [])
            return Text(f"{clock} running {len(jobs)} job(s): {', '.join(jobs)} (Ctrl-C stops)")
        if record.levelno >= self.threshold:
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            return Text(f"{clock} {self._formatter.format(record)}", style=style)
        return None
