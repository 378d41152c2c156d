"""The imported config as TOML text with comments: the connection, the tiers, a job per CQ or
task, each with comments on what could not be carried over; a job tierflow cannot run as the
original did is written commented out, with the reason."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tierflow._errors import InvalidInputError
from tierflow._importing._server import Connection, connection_keys
from tierflow._importing._translation import TierT, Translation
from tierflow._windows import isoformat

__all__ = [
    "Document",
    "JobText",
    "config_name",
    "imported_config",
    "job_texts",
    "toml_key",
    "toml_value",
    "write_templates",
]

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


def job_texts(
    translations: Iterable[tuple[Translation[TierT], str, list[str]]],
    tiers: Mapping[TierT, str],
    template_suffix: str,
    templates: Path | None,
) -> tuple[list[JobText], dict[Path, str]]:
    """The jobs of `translations` (each with the name it asks for and the comment lines `about`
    its origin), named uniquely, their tiers by their names in the config; and the query jobs'
    template files to write into `templates` (each `<job name><template_suffix>`)."""
    taken: set[str] = set()
    files: dict[Path, str] = {}
    jobs: list[JobText] = []
    for translation, wanted, about in translations:
        name = config_name(wanted, taken)
        file = name + template_suffix
        jobs.append(_job_text(translation, name, about, tiers, file, templates, files))
    return jobs, files


def _job_text(
    translation: Translation[TierT],
    name: str,
    about: list[str],
    tiers: Mapping[TierT, str],
    template_file: str,
    templates: Path | None,
    files: dict[Path, str],
) -> JobText:
    keys = dict(translation.keys)
    if translation.source is not None and translation.dest is not None:
        keys["source"], keys["dest"] = tiers[translation.source], tiers[translation.dest]
    job = JobText(
        name, keys, about=about, notes=list(translation.notes), refused=list(translation.refused)
    )
    if translation.template is not None:
        _place_template(job, translation.template, template_file, templates, files)
    return job


def _place_template(
    job: JobText, template: str, filename: str, templates: Path | None, files: dict[Path, str]
) -> None:
    """Give a query job its `template`: a file `filename` in `templates` (added to `files`, to be
    written), or, with no folder given or the job refused, shown as a comment under its name."""
    if templates is None:
        job.refused.append(
            "a query job needs its template in a file: run the import with --templates DIR"
        )
    if templates is None or job.refused:
        job.keys["template"] = filename
        job.shown = template
        return
    path = (templates / filename).resolve()
    files[path] = template
    job.keys["template"] = str(path)


def write_templates(files: dict[Path, str]) -> None:
    """Write the query jobs' templates; if any file exists with other content, none is written
    (exit 2): an import never overwrites."""
    for path, body in files.items():
        if path.exists() and path.read_text(encoding="utf-8") != body:
            raise InvalidInputError(f"{path} exists with other content: nothing overwritten")
    for path, body in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")


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


def imported_config(
    connection: Connection,
    kind: str,
    header: list[str],
    tiers: Mapping[str, str],
    jobs: list[JobText],
    files: dict[Path, str],
) -> str:
    """The config text: `connection` (named `kind`), `tiers` (name → bucket on it) and `jobs`
    under the `header` comment, once the query jobs' template `files` are written."""
    write_templates(files)
    return Document(
        header=header,
        connection=(kind, connection_keys(connection, kind)),
        tiers={name: {"connection": kind, "bucket": bucket} for name, bucket in tiers.items()},
        jobs=jobs,
    ).render()


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
