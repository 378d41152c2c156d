"""Structured logging: every record has a stable snake_case event name and its fields.

`log_event("window_succeeded", job=…, window_start=…)` logs through stdlib logging; the JSON
formatter writes one object per line (for machines), the console one a readable line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["configure_logging", "log_event"]

_logger = logging.getLogger("tierflow")


def log_event(
    event: str, *, level: int = logging.INFO, exc_info: bool = False, **fields: Any
) -> None:
    """Log `event` (a stable snake_case name) with its fields."""
    _logger.log(level, event, exc_info=exc_info, extra={"tierflow_fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        body.update(getattr(record, "tierflow_fields", {}))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "tierflow_fields", {})
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{record.levelname.lower():7} {record.getMessage()} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "warning", *, json_lines: bool | None = None) -> None:
    """Log to stderr: JSON lines unless stderr is a terminal (or `json_lines` says otherwise)."""
    as_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else ConsoleFormatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(level.upper())
    _logger.propagate = False
