"""What every `tierflow` command shares: the consoles, the common options, error mapping (a
tierflow error, never a traceback), parsing instants, and `run_command`: a command's work on a
`Tierflow`, as one coroutine on one event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from tierflow._api import Tierflow
from tierflow._clock import utc_now
from tierflow._config import Config, load_config
from tierflow._errors import (
    ApplyRefusedError,
    ConfigError,
    InvalidInputError,
    TierflowError,
    UnknownJobError,
)
from tierflow._logging import log_event
from tierflow._runner import select_jobs
from tierflow._windows import isoformat

__all__ = [
    "ConfigOption",
    "JobsArgument",
    "JsonOption",
    "NowOption",
    "err",
    "fail",
    "instant",
    "mapped_errors",
    "out",
    "plural",
    "print_json",
    "run_command",
    "when",
]

# Markup off: messages, queries and errors hold user text with brackets, printed as it is.
out = Console(
    highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200
)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        envvar="TIERFLOW_CONFIG",
        help="The config file (also accepted before the command).",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
NowOption = Annotated[
    str | None,
    typer.Option(
        "--now",
        metavar="TS",
        help="Act as if it were this instant (RFC 3339 with a zone), not now.",
    ),
]
JobsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="JOB", help="Jobs (default: all).", show_default=False),
]


def fail(message: str, code: int) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    raise typer.Exit(code)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Bad input (config, arguments, job names, tiers `apply` cannot apply as declared) exits 2,
    any other tierflow error 1, and so does any other exception (a bug): one `error: internal
    error: …` line, never a traceback (that is logged as `internal_error`, at debug level)."""
    try:
        yield
    except (ConfigError, InvalidInputError, UnknownJobError, ApplyRefusedError) as exc:
        fail(str(exc), 2)
    except TierflowError as exc:
        fail(str(exc), 1)
    except (typer.Exit, typer.Abort):
        raise  # typer's own ways out (RuntimeErrors): already an exit code
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log_event("internal_error", level=logging.DEBUG, exc_info=True, error=text)
        fail(f"internal error: {text}", 1)


def instant(text: str | None, option: str) -> datetime:
    """`text` as an aware UTC instant (the clock when None); exit 2 naming `option` if it is not
    RFC 3339 with a zone."""
    if text is None:
        return utc_now()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        fail(f"{option} {text!r} is not an RFC 3339 timestamp", 2)
    if moment.tzinfo is None:
        fail(f"{option} {text!r} has no time zone; add Z for UTC", 2)
    return moment.astimezone(UTC)


def run_command(
    config: Path,
    work: Callable[[Config, Tierflow], Awaitable[T]],
    jobs: Sequence[str] | None = None,
    *,
    checked: bool = False,
) -> T:
    """What every command does around its own work: load the config at `config`, check the job
    names (before the store opens: a typo must not leave a state file behind), then run
    `work(config, tf)` on one event loop with a `Tierflow` closed on that loop after; errors
    mapped to exit codes. `checked` (for the commands that run windows): every chosen job's
    definition must match the one its ledger was recorded with (exit 2 naming what changed)."""
    with mapped_errors():
        loaded = load_config(config)
        select_jobs(loaded, jobs)
        return asyncio.run(_work(loaded, work, jobs, checked=checked))


async def _work(
    config: Config,
    work: Callable[[Config, Tierflow], Awaitable[T]],
    jobs: Sequence[str] | None,
    *,
    checked: bool,
) -> T:
    async with Tierflow(config) as tf:
        if checked:
            from tierflow._definitions import accept_definitions

            await accept_definitions(config, tf.store, jobs)
        return await work(config, tf)


def print_json(body: object) -> None:
    """`body` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")


def when(moment: datetime | None) -> str | None:
    """RFC 3339 text for an instant, None for None."""
    return isoformat(moment) if moment else None


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 window`, `2 windows` (or `many`)."""
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"
