"""Checks a rendered query must pass before it is sent: `tierflow validate` runs them on a sample
window, and the runner before every dispatch (a query that fails is a failed window, never sent).

- Time bounds: every Flux `range()` is bounded by exactly the window (absolute `start` and
  `stop`, no relative or computed bounds); every InfluxQL statement's WHERE holds exactly
  `time >= '<start>' AND time < '<stop>'` at its top level (no OR beside them).
- Writes: every `to()` (Flux) or `INTO` (InfluxQL) targets the job's dest tier, and nothing
  else sends data anywhere (`http.post`, `sql.to`, …). A query job must write.
- Rows back: a result that comes back to tierflow must be aggregated or limited; a raw copy
  would stream the whole source through tierflow. In Flux every top-level expression is a
  result, `to()` included (it passes its input on).

Each dialect's checker lives in its engine package (`Dialect.query_problems`) and reads the query
through the language's tokenizer, not regexes over the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierflow._errors import TemplateError
from tierflow._templates import RenderedQuery
from tierflow._windows import Window

__all__ = ["Target", "UnsafeQueryError", "check_query"]


class UnsafeQueryError(TemplateError):
    """A rendered query breaks a rule that must hold before it may be sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """The job's dest tier: where its query may write."""

    bucket: str
    org: str | None
    database: str
    retention_policy: str | None


def check_query(query: RenderedQuery, *, window: Window, dest: Target, require_write: bool) -> None:
    """Raise `UnsafeQueryError` (naming the template) unless `query` may run for `window`."""
    from tierflow._engines import dialect_named

    problems = list(
        dialect_named(query.dialect).query_problems(
            query.text, window=window, dest=dest, require_write=require_write
        )
    )
    if problems:
        raise UnsafeQueryError(f"template {query.template}: " + "; ".join(problems))
