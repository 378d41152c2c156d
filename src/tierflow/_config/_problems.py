"""One config problem (file, table, key, value, message) and how it is shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tierflow._config._models import (
    _NAME,
)
from tierflow._url_checks import (
    redact_url,
)

__all__ = ["_MISSING", "_SECRET_KEYS", "_SECTIONS", "_Problem", "_table_name"]


@dataclass(frozen=True, slots=True)
class _Problem:
    table: str
    key: str | None
    value: object
    message: str

    def render(self, path: Path) -> str:
        where = f"[{self.table}]" if self.table else "top level"
        key = f" {self.key}" if self.key else ""
        shown = "" if self.value is _MISSING else f" = {_show(self.value)}"
        return f"{path}: {where}{key}{shown}: {self.message}"


_MISSING = object()
_SECTIONS = frozenset({"state", "scheduler", "server", "connections", "tiers", "jobs"})
_SECRET_KEYS = frozenset({"password", "token", "value"})


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{redact_url(value)}"'
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


def _table_name(*parts: str) -> str:
    return ".".join(part if _NAME.fullmatch(part) else f'"{part}"' for part in parts)
