"""The imported config as TOML text with comments: the connection, the tiers, a job per CQ or
task, each with comments on what could not be carried over; a job tierflow cannot run as the
original did is written commented out, with the reason."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierflow._windows import isoformat

__all__ = ["Document", "JobText", "config_name", "toml_key", "toml_value"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_value(key)


def toml_value(value: Any) -> str:
    """A TOML literal: JSON's string escapes are TOML's (DEL is escaped too, TOML refuses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return toml_value(isoformat(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Mapping):
        inner = ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_name(text: str, taken: set[str]) -> str:
    """`text` as a name the config accepts (`[A-Za-z_][A-Za-z0-9_-]*`), unique among `taken`
    (which it joins)."""
    name = _NAME_CHARS.sub("_", text) or "_"
    if not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name}_{n}", n + 1
    taken.add(unique)
    return unique


def comment(text: str) -> list[str]:
    """`text` as TOML comment lines (each line of it prefixed)."""
    return [("# " + line).rstrip() for line in text.splitlines() or [""]]


@dataclass(slots=True)
class JobText:
    """A job to write: its table's keys, the comments above it, and the reasons (if any) it is
    written commented out."""

    name: str
    keys: dict[str, Any]
    about: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    shown: str | None = None  # e.g. a template with no file to go to, shown as a comment


@dataclass(slots=True)
class Document:
    header: list[str]
    connection: tuple[str, dict[str, Any]]
    tiers: dict[str, dict[str, Any]]
    jobs: list[JobText]

    def render(self) -> str:
        lines = [*(line for text in self.header for line in comment(text)), ""]
        name, keys = self.connection
        lines += _table(f"connections.{toml_key(name)}", keys)
        for tier, tier_keys in self.tiers.items():
            lines += _table(f"tiers.{toml_key(tier)}", tier_keys)
        for job in self.jobs:
            lines += _job(job)
        return "\n".join(lines).rstrip("\n") + "\n"


def _table(header: str, keys: Mapping[str, Any]) -> list[str]:
    body = [f"{toml_key(k)} = {toml_value(v)}" for k, v in keys.items() if v is not None]
    return [f"[{header}]", *body, ""]


def _job(job: JobText) -> list[str]:
    lines = [line for text in job.about for line in comment(text)]
    for note in job.notes:
        lines += comment("note: " + note)
    table = _table(f"jobs.{toml_key(job.name)}", job.keys)
    if job.refused:
        lines += comment("NOT IMPORTED: left commented out, because")
        lines += [line for reason in job.refused for line in comment("  - " + reason)]
        table = [("# " + line).rstrip() for line in table[:-1]] + [""]
    lines += table
    if job.shown is not None:
        lines += comment("its template:")
        lines += [*_indented(job.shown), ""]
    return lines


def _indented(text: str) -> Iterable[str]:
    return (("#   " + line).rstrip() for line in text.splitlines())
