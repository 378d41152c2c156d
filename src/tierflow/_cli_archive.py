"""The cold-tier commands: `tierflow archive verify|query` and `tierflow restore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from tierflow._api import Tierflow
from tierflow._cli_common import (
    ConfigOption,
    JsonOption,
    err,
    instant,
    out,
    plural,
    print_json,
    run_command,
)
from tierflow._cli_group import TierflowGroup
from tierflow._config import DEFAULT_CONFIG
from tierflow._errors import InvalidInputError

if TYPE_CHECKING:
    from tierflow._config import Config
    from tierflow._transfer import Transfer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `archive` and `restore` to the `tierflow` app."""
    app.add_typer(archive_app, name="archive")
    app.command()(restore)


archive_app = typer.Typer(
    cls=TierflowGroup, help="The cold tier: check and query the Parquet archive."
)


@archive_app.command("verify")
def archive_verify(
    tier: Annotated[str, typer.Argument(metavar="TIER", help="The cold tier.")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Re-check every archived file (exists, checksum, row count); exit 1 naming each bad one."""
    problems = run_command(config, lambda _, tf: tf.archive_verify(tier))
    if as_json:
        print_json({"tier": tier, "ok": not problems, "problems": [str(p) for p in problems]})
    else:
        for problem in problems:
            err.print(str(problem))
        out.print(f"{tier}: {'ok' if not problems else plural(len(problems), 'bad file')}")
    if problems:
        raise typer.Exit(1)


@archive_app.command("query")
def archive_query(
    tier: Annotated[str, typer.Argument(metavar="TIER", help="The cold tier.")],
    sql: Annotated[
        str,
        typer.Argument(
            metavar="SQL",
            help='SQL; each measurement is a table of its own columns, e.g. "cpu"; '
            "`points` holds them all.",
        ),
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Run SQL over the archive with DuckDB (extra tierflow[archive-query]), no restore needed."""
    result = run_command(config, lambda _, tf: tf.archive_query(tier, sql))
    if as_json:
        print_json({"columns": list(result.columns), "rows": [list(r) for r in result.rows]})
        return
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


def restore(
    tier: Annotated[str, typer.Argument(metavar="TIER", help="The cold tier to read.")],
    start: Annotated[str, typer.Option("--from", metavar="TS", help="Range start (RFC 3339).")],
    stop: Annotated[
        str, typer.Option("--to", metavar="TS", help="Range end, exclusive (RFC 3339).")
    ],
    into: Annotated[
        str, typer.Option("--into", metavar="TIER", help="The live tier to write into.")
    ],
    measurement: Annotated[
        str | None, typer.Option("--measurement", metavar="NAME", help="Only this measurement.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Write archived points back into a live tier, point for point, field types kept. A
    measurement the live tier refuses (e.g. a field type conflict) is named with its field and
    first offending point and left out; the others are restored; exit 1 if any was refused."""
    from tierflow._lineprotocol import ns_isoformat

    async def work(loaded: Config, tf: Tierflow) -> Transfer:
        tf.archive(tier)  # bad input if it is not a cold tier
        target = loaded.tiers.get(into)
        if target is None or target.is_archive:
            raise InvalidInputError(f"--into {into!r} is not a live tier of {config}")
        begin, end = instant(start, "--from"), instant(stop, "--to")
        if begin >= end:
            raise InvalidInputError(f"--from {start} is not before --to {stop}")
        return await tf.restore(tier, begin, end, into=into, measurement=measurement)

    moved = run_command(config, work)
    if as_json:
        print_json(
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
            f"restored {plural(moved.points, 'point')} into {into} "
            f"({moved.requests} requests, {moved.bytes_sent:,} bytes)"
        )
        for failure in moved.failures:
            # One line each: a server's message may quote a line whose strings hold newlines.
            text = str(failure).replace("\r", "\\r").replace("\n", "\\n")
            err.print(Text.assemble(("error:", "bold red"), " not restored: ", text))
    if moved.failures:
        raise typer.Exit(1)
