"""The command group behind `tierflow`: global options accepted on either side of the command,
and no traceback for any error a command lets through."""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

from tierflow._cli_common import fail
from tierflow._errors import ConfigError, InvalidInputError, TierflowError, UnknownJobError

__all__ = ["TierflowGroup", "global_options_first"]

_GLOBAL = ("--log-level",)  # the group's options: after the command they move before it
_CONFIG = ("-c", "--config")  # the commands' option: before the command it moves after it
_WITH_VALUE = (*_GLOBAL, *_CONFIG)


def _split(token: str) -> tuple[str, bool]:
    """The option name of `token`, and whether its value is in it (`--config=x`)."""
    name, equals, _ = token.partition("=")
    if equals and name.startswith("--"):
        return name, True
    if token.startswith("-c") and len(token) > 2 and not token.startswith("--"):
        return "-c", True
    return token, False


def global_options_first(args: list[str], subgroups: frozenset[str]) -> list[str]:
    """`args` with `--log-level` moved before the command and `-c/--config` moved after it
    (after `archive verify` for a subgroup's command), so either goes on either side. Nothing
    after `--` moves: it is an argument, whatever it looks like."""
    before: list[str] = []
    moved_config: list[str] = []
    moved_global: list[str] = []
    rest: list[str] = []
    path: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            rest += args[index:]
            break
        name, inline = _split(token)
        width = 1 if inline or name not in _WITH_VALUE else 2
        taken = args[index : index + width]
        index += width
        if not path:  # the group's side
            if name in _CONFIG:
                moved_config += taken
            elif token.startswith("-"):
                before += taken
            else:
                path.append(token)
        elif name in _GLOBAL:
            moved_global += taken
        elif path[0] in subgroups and len(path) == 1 and not token.startswith("-"):
            path.append(token)  # `archive verify`: the command is the subgroup's
        else:
            rest += taken
    return moved_global + before + path + moved_config + rest


class TierflowGroup(TyperGroup):
    """A typer group whose global options go on either side of the command, and whose errors
    all end as `error: …` with an exit code, never a traceback."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            subgroups = frozenset(
                name for name, command in self.commands.items() if hasattr(command, "commands")
            )
            args = global_options_first(args, subgroups)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, InvalidInputError, UnknownJobError) as exc:
            fail(str(exc), 2)
        except TierflowError as exc:
            fail(str(exc), 1)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("click", "typer")):
                raise  # usage errors: click prints them and exits 2
            # A bug, not the user's doing: one line; the trace goes to the debug log.
            logging.getLogger("tierflow").debug("internal_error", exc_info=True)
            fail(
                f"internal error: {type(exc).__name__}: {exc} (a bug in tierflow; "
                "--log-level debug shows where)",
                1,
            )
