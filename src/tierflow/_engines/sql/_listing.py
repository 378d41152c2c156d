"""The measurements of one 3.x tier with data in a window (what a measurement pattern is
matched against).

On 3.x a measurement is a table of the tier's database. `information_schema.tables` (schema
`iox`: the database's own tables, not `system` or `information_schema`) names every table ever
written, whatever the time of its points: only candidates. Each candidate the pattern may match
is then checked by a bounded read of exactly the window, with the job's tag values:
`(SELECT '<table>' AS "measurement" FROM "db"."<table>" WHERE "time" >= … AND "time" < …
[AND "tag" = '…'] LIMIT 1)`, `GROUP` of them joined by `UNION ALL` in one request (each part
in parentheses: a LIMIT binds to the whole UNION otherwise, and DataFusion refuses
`… LIMIT 1 UNION ALL …`). A part answers one row when its table has a point there, none
otherwise. Tag values are read as InfluxQL reads them (`tag_filters`): `""` selects the points
without the tag (`IS NULL`). A table without one of the job's tags as a tag column
(`information_schema.columns`: tags are `Dictionary` columns) has no point with a value of it
other than `""`: it is not read (its filter would name a column it lacks, which DataFusion
refuses); for `""` every point of it qualifies, and that filter is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines.sql._literals import sql_ident, sql_literal, sql_time, tag_filters
from tierflow._windows import Window

__all__ = [
    "GROUP",
    "check_query",
    "list_measurements",
    "listing_text",
    "names_query",
    "tag_columns_query",
]

#: Tables checked per request (parts of one UNION ALL).
GROUP = 50
#: The column each part of the check answers.
_COLUMN = "measurement"


def names_query() -> str:
    """Every table of the database a query runs in (any time)."""
    return (
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'iox' ORDER BY table_name"
    )


def tag_columns_query(tags: Sequence[str]) -> str:
    """The tables of the database that have a column named as one of `tags`, and its type."""
    names = ", ".join(sql_literal(tag) for tag in sorted(tags))
    return (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = 'iox' AND column_name IN ({names})"
    )


def check_query(
    tier: TierConfig,
    window: Window,
    tags: Mapping[str, str],
    names: Sequence[str],
    columns: Mapping[str, Collection[str]] | None = None,
) -> str:
    """One row (`measurement`: the table's name) for each of `names` with a point (with the
    tag values `tags`, as `tag_filters` reads them; `columns`: each table's tag columns among
    `tags`, when known) in `window` of the tier's database."""
    return " UNION ALL ".join(
        _part(tier, window, tags, name, None if columns is None else columns.get(name, ()))
        for name in names
    )


def _part(
    tier: TierConfig,
    window: Window,
    tags: Mapping[str, str],
    name: str,
    columns: Collection[str] | None = None,
) -> str:
    source = f"{sql_ident(tier.database)}.{sql_ident(name)}"
    return (
        f"(SELECT {sql_literal(name)} AS {sql_ident(_COLUMN)} FROM {source} "
        f"WHERE {_where(window, tags, columns)} LIMIT 1)"
    )


def _where(window: Window, tags: Mapping[str, str], columns: Collection[str] | None = None) -> str:
    where = [f'"time" >= {sql_time(window.start)}', f'"time" < {sql_time(window.stop)}']
    where += tag_filters(tags, columns) or []
    return " AND ".join(where)


def listing_text(tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
    """What `plan` shows: the names query, then the check with `…` for the tables it lists."""
    texts = [names_query()]
    if tags:
        texts.append(tag_columns_query(list(tags)))
    part = _part(tier, window, tags, "…")
    texts.append(
        f"{part} UNION ALL … (one part per table listed that the pattern matches and that has "
        f"the tags, {GROUP} per request)"
    )
    return f"-- database {tier.database}\n" + ";\n".join(texts)


async def list_measurements(
    engine: Engine,
    tier: TierConfig,
    window: Window,
    tags: Mapping[str, str],
    wanted: Callable[[str], bool],
) -> list[str]:
    database = tier.database
    listed = await engine.query(names_query(), database=database)
    names = {
        str(row[at])
        for series in listed
        if (at := _index(series.columns, "table_name")) is not None
        for row in series.values
        if row[at] is not None
    }
    candidates = sorted(name for name in names if wanted(name))
    columns: dict[str, set[str]] | None = None
    if candidates and tags:
        columns = await _tag_columns(engine, database, tags)
        # A table without a tag the job names with a value other than "" has no such point.
        candidates = [n for n in candidates if tag_filters(tags, columns.get(n, set())) is not None]
    found: set[str] = set()
    for at in range(0, len(candidates), GROUP):
        text = check_query(tier, window, tags, candidates[at : at + GROUP], columns)
        for series in await engine.query(text, database=database):
            column = _index(series.columns, _COLUMN)
            if column is not None:
                found.update(str(row[column]) for row in series.values if row[column] is not None)
    # Only names asked about: an answer naming another table would be a server's error.
    return sorted(found & set(candidates))


async def _tag_columns(
    engine: Engine, database: str, tags: Mapping[str, str]
) -> dict[str, set[str]]:
    """Table → which of `tags` it has as tag columns."""
    having: dict[str, set[str]] = {}
    for series in await engine.query(tag_columns_query(list(tags)), database=database):
        table, column, kind = (_index(series.columns, c) for c in _COLUMNS)
        if table is None or column is None or kind is None:
            continue
        for row in series.values:
            if str(row[kind]).startswith("Dictionary"):
                having.setdefault(str(row[table]), set()).add(str(row[column]))
    return having


_COLUMNS = ("table_name", "column_name", "data_type")


def _index(columns: Sequence[str], name: str) -> int | None:
    return columns.index(name) if name in columns else None
