"""`tierflow import influxdb1|influxdb2`: print the config that does the work of a server's
continuous queries (1.x) or tasks (2.x). Exit 2, naming the server, when it cannot be read."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from tierflow._cli_common import fail, instant, mapped_errors
from tierflow._cli_group import TierflowGroup

__all__ = ["register"]

import_app = typer.Typer(
    cls=TierflowGroup,
    help="Print a tierflow config doing the work of what a server already runs.",
    no_args_is_help=True,
)

UrlOption = Annotated[str, typer.Option("--url", metavar="URL", help="The server's URL.")]
StartOption = Annotated[
    str | None,
    typer.Option(
        "--start",
        metavar="TS",
        help="The jobs' start (RFC 3339 with a zone; default: now). Earlier windows were the "
        "server's own to compute.",
    ),
]
TemplatesOption = Annotated[
    Path | None,
    typer.Option(
        "--templates",
        metavar="DIR",
        help="Where to write query jobs' templates (without it such jobs are printed "
        "commented out, their template shown).",
    ),
]


def _secret_options(what: str) -> tuple[object, object, object]:
    return (
        typer.Option(f"--{what}-env", metavar="VAR", help=f"The {what} is in this variable."),
        typer.Option(f"--{what}-file", metavar="PATH", help=f"The {what} is in this file."),
        typer.Option(
            f"--{what}-command",
            metavar="CMD",
            help=f"A command printing the {what} (split like a shell would, no shell run).",
        ),
    )


_PASSWORD_ENV, _PASSWORD_FILE, _PASSWORD_COMMAND = _secret_options("password")
_TOKEN_ENV, _TOKEN_FILE, _TOKEN_COMMAND = _secret_options("token")


def register(app: typer.Typer) -> None:
    """Add `import` to the `tierflow` app."""
    app.add_typer(import_app, name="import")


@import_app.command("influxdb1")
def import_influxdb1(
    url: UrlOption,
    database: Annotated[
        str | None,
        typer.Option("--database", metavar="DB", help="Only this database's CQs (default: all)."),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", metavar="USER", help="1.x user.")
    ] = None,
    password_env: Annotated[str | None, _PASSWORD_ENV] = None,
    password_file: Annotated[Path | None, _PASSWORD_FILE] = None,
    password_command: Annotated[str | None, _PASSWORD_COMMAND] = None,
    start: StartOption = None,
    templates: TemplatesOption = None,
) -> None:
    """Read the server's continuous queries (SHOW CONTINUOUS QUERIES) and print the config
    (TOML) doing their work: a downsample job per CQ tierflow's own query matches, a query job
    (its template the CQ's own query) per other, and commented out, saying why, any it cannot
    do the same way."""
    from tierflow._importing import Connection, import_influxdb1, secret_source

    with mapped_errors():
        secret = None
        if password_env or password_file or password_command:
            if username is None:
                fail("a password needs --username (1.x authenticates a user)", 2)
            secret = secret_source(password_env, password_file, _split(password_command))
        connection = Connection(url, username=username, secret=secret)
        text = asyncio.run(
            import_influxdb1(
                connection,
                database=database,
                start=instant(start, "--start"),
                templates=templates,
            )
        )
    sys.stdout.write(text)


def _split(command: str | None) -> list[str] | None:
    return shlex.split(command) if command else None


@import_app.command("influxdb2")
def import_influxdb2(
    url: UrlOption,
    org: Annotated[str, typer.Option("--org", metavar="ORG", help="The org whose tasks to read.")],
    token_env: Annotated[str | None, _TOKEN_ENV] = None,
    token_file: Annotated[Path | None, _TOKEN_FILE] = None,
    token_command: Annotated[str | None, _TOKEN_COMMAND] = None,
    start: StartOption = None,
    templates: TemplatesOption = None,
) -> None:
    """Read the org's tasks (GET /api/v2/tasks) and print the config (TOML) doing their work:
    a downsample job per task whose Flux is tierflow's own, a query job (its template the task's
    Flux bounded by the window) per other, and commented out, saying why, any it cannot do the
    same way."""
    from tierflow._importing import Connection, import_influxdb2, secret_source

    with mapped_errors():
        secret = secret_source(token_env, token_file, _split(token_command))
        connection = Connection(url, secret=secret, org=org)
        text = asyncio.run(
            import_influxdb2(connection, start=instant(start, "--start"), templates=templates)
        )
    sys.stdout.write(text)
