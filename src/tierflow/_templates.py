"""Query text from Jinja2 templates: sandboxed, strict, and safe by construction.

Every value that reaches a query must pass through a quoting filter, which marks its output as
`QueryLiteral`. The environment's `finalize` refuses anything else, so a template that forgets to
quote a value fails to render instead of silently letting hostile input change the statement.
Each dialect owns its filters (`Dialect.filters()`, in its engine package); this module asks
every registered dialect for them when it first builds an environment, and knows no language.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from tierflow._errors import TemplateError

if TYPE_CHECKING:
    from tierflow._engines._dialect import Dialect

__all__ = [
    "DeleteRange",
    "QueryLiteral",
    "RenderedQuery",
    "number_literal",
    "render",
    "render_file",
]


class QueryLiteral(str):
    """Text a quoting filter produced: safe to place in a query as it is."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Points a `replace = true` job deletes from its dest before writing the window again:
    `[start, stop)` of one measurement in one bucket, narrowed by exact tag values."""

    bucket: str
    measurement: str
    start: datetime
    stop: datetime
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedQuery:
    """A query ready to send, with what the ledger records about where it came from.

    `dialect` names the language (`Dialect.name`), set by the renderer
    from the source connection's kind. `deletes` are ranges the engine must delete before it
    sends the query (`replace = true`); they are part of the same call, so a retry repeats both.
    """

    text: str
    template: str
    template_version: str
    dialect: str = "influxql"
    deletes: tuple[DeleteRange, ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def number_literal(value: object, what: str = "number") -> str:
    """A finite int or float as plain decimal digits (no exponent: Flux has none), which both
    InfluxQL and Flux read as the same number. Floats keep a decimal point, so they stay floats."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TemplateError(f"{what} needs an int or a float, got {type(value).__name__}")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise TemplateError(f"{what}: {value} does not fit in a 64-bit integer")
        return str(value)
    if not math.isfinite(value):
        raise TemplateError(f"{what}: {value!r} is not a finite number")
    text = format(Decimal(repr(value)), "f")
    return text if "." in text else text + ".0"


def _require_quoted(value: object) -> object:
    if isinstance(value, QueryLiteral):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TemplateError(
        f"the value {str(value)[:40]!r} reached the query without a quoting filter "
        f"({_filter_names()})"
    )


@cache
def _filter_names() -> str:
    """Every dialect's quoting filters, by dialect, for the message above."""
    from tierflow._engines import dialects

    return "; ".join(f"{d.name}: {', '.join(d.filters())}" for d in dialects())


def _environment(loader: jinja2.BaseLoader) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        finalize=_require_quoted,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=False,
        lstrip_blocks=True,
    )
    from tierflow._engines import dialects

    for dialect in dialects():
        env.filters.update(dialect.filters())
    return env


@cache
def _builtin() -> SandboxedEnvironment:
    from tierflow._engines import dialects

    # Each dialect's templates live in its engine package; `influxql/…` and `flux/…` name them.
    return _environment(
        jinja2.PrefixLoader(
            {
                dialect.name: jinja2.PackageLoader(dialect.package, "templates")
                for dialect in dialects()
            }
        )
    )


def template_version(source: str) -> str:
    """A template's version: the start of the SHA-256 of its source text."""
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def render(dialect: Dialect, stem: str, context: Mapping[str, Any]) -> RenderedQuery:
    """Render one of a dialect's built-in templates, e.g. `downsample` (recorded by its name
    `influxql/downsample.influxql.j2`)."""
    name = f"{dialect.name}/{stem}{dialect.template_suffix}"
    try:
        template, version = _builtin_template(name)
        text = template.render(context)
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {name}: {exc}") from exc
    # InfluxQL is joined into one line (shorter logs); Flux keeps its lines, since a user's
    # `//` comment would swallow everything after it if lines were joined.
    text = _one_line(text) if dialect.one_line else _trim_lines(text)
    return RenderedQuery(text, name, version, dialect.name)


@cache
def _builtin_template(name: str) -> tuple[jinja2.Template, str]:
    """A built-in template and its version, loaded once: they ship with the package, and a
    catch-up renders one per batch (reading and hashing the file each time cost more than
    rendering it)."""
    env = _builtin()
    template = env.get_template(name)
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    return template, template_version(source)


@cache
def _user_environment() -> SandboxedEnvironment:
    # No loader: a user template cannot include or import other files, so its source text is
    # the whole of it and its hash is its version.
    return _environment(jinja2.DictLoader({}))


def render_file(
    path: Path, shown_as: str, context: Mapping[str, Any], *, dialect: Dialect
) -> RenderedQuery:
    """Render a user's template file (`kind = "query"` jobs) in the source connection's
    `dialect`. `shown_as` is the name recorded in the ledger and used in errors (the path as the
    config writes it)."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {shown_as}: cannot read {path}: {exc}") from None
    try:
        text = _user_environment().from_string(source).render(context)
    except TemplateError as exc:
        raise TemplateError(f"template {shown_as}: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {shown_as}: {type(exc).__name__}: {exc}") from None
    return RenderedQuery(_trim_lines(text), shown_as, template_version(source), dialect.name)


def _trim_lines(text: str) -> str:
    """Drop blank lines and trailing spaces; keep every other line as written."""
    lines = (line.rstrip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line.strip())


def _one_line(text: str) -> str:
    """Join the template's lines with single spaces. Safe for literals: quoting escapes newlines,
    so no literal spans a line, and every literal ends in a quote, so no line edge is inside one."""
    lines = (line.strip(" \t") for line in text.split("\n"))
    return " ".join(line for line in lines if line)
