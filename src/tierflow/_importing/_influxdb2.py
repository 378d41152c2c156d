"""`tierflow import influxdb2`: read a 2.x org's tasks, write the config that does their work
(see `_translate2` for what carries over and what is refused)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tierflow._engines._base import bare
from tierflow._engines.flux._engine import FluxEngine
from tierflow._importing._server import Connection, reading
from tierflow._importing._toml import config_name, imported_config, job_texts
from tierflow._importing._translate2 import ImportedTask, translate_task
from tierflow._windows import isoformat

__all__ = ["import_influxdb2", "influxdb2_config"]

CONNECTION = "influxdb2"
_PAGE = 100


async def import_influxdb2(
    connection: Connection, *, start: datetime, templates: Path | None
) -> str:
    """The config (TOML text) doing the work of the tasks of `connection`'s org; query jobs'
    templates are written into `templates`."""
    tasks: list[dict[str, Any]] = []
    async with reading(connection, CONNECTION) as engine:
        flux = bare(engine, FluxEngine)
        after: str | None = None
        while True:
            params = {"org": connection.org or "", "limit": str(_PAGE)}
            if after is not None:
                params["after"] = after
            reply = await flux.http.request("GET", "api/v2/tasks", kind="query", params=params)
            page = list(reply.json().get("tasks") or [])
            tasks += page
            if len(page) < _PAGE:
                break
            after = str(page[-1]["id"])
    return influxdb2_config(connection, tasks, start=start, templates=templates)


def influxdb2_config(
    connection: Connection,
    tasks: list[dict[str, Any]],
    *,
    start: datetime,
    templates: Path | None,
) -> str:
    """The config text for `tasks` (pure but for writing the query jobs' templates)."""
    org = connection.org or ""
    translated = [translate_task(task, org, start) for task in tasks]
    buckets = sorted({b for t in translated for b in (t.source, t.dest) if b is not None})
    taken: set[str] = set()
    tiers = {bucket: config_name(bucket, taken) for bucket in buckets}
    jobs, files = job_texts(
        ((task, task.name or task.task_id, _about(task)) for task in translated),
        tiers,
        ".flux.j2",
        templates,
    )
    header = [
        f"tierflow config imported from the tasks of org {org!r} at {connection.url}"
        f" ({len(tasks)} found).",
        "Each job does the work of one task. Once tierflow runs it, disable the task",
        "(influx task update --id ID --status inactive): both would write the same points.",
        f"start: {isoformat(start)}; windows before it were the task's to compute.",
    ]
    if not tasks:
        header.append("No tasks found: nothing to import.")
    tier_buckets = {name: bucket for bucket, name in tiers.items()}
    return imported_config(connection, CONNECTION, header, tier_buckets, jobs, files)


def _about(task: ImportedTask) -> list[str]:
    return [
        f"task {task.name!r} (id {task.task_id}):",
        *("  " + line for line in task.flux.splitlines()),
    ]
