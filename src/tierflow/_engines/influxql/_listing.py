"""The measurements of one 1.x tier with data in a window (what a measurement pattern is
matched against).

`SHOW MEASUREMENTS` is per database, not per retention policy, and refuses a time range
("SHOW MEASUREMENTS doesn't support time in WHERE clause", seen on 1.6.7): alone, it would list a
measurement whose points lie only in another policy or another time. So its names (those the
pattern may match) are only candidates, checked by a read of the tier's own policy over the
window: `SELECT * FROM "db"."rp"."a", "db"."rp"."b", … WHERE time … LIMIT 1` answers one series
per measurement with at least one point there (the limit applies per series: one row each) and
none for a measurement whose points lie in another policy or outside the window (seen on 1.6.7;
tests/integration/test_wildcards.py). The candidates are read `GROUP` to a statement (the answer
has a column for every field and tag key of the measurements a statement reads, in every row),
`STATEMENTS` statements to a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines.influxql._literals import influxql_ident, influxql_string, influxql_time
from tierflow._errors import TemplateError
from tierflow._windows import Window

__all__ = [
    "GROUP",
    "STATEMENTS",
    "check_query",
    "check_unquotable",
    "exists_query",
    "list_measurements",
    "listing_text",
    "names_query",
]

#: Measurements per checking statement, and statements per request.
GROUP = 50
STATEMENTS = 10


def names_query(tier: TierConfig) -> str:
    """Every measurement name of the tier's database (any policy, any time)."""
    return f"SHOW MEASUREMENTS ON {influxql_ident(tier.database)}"


def exists_query(tier: TierConfig, window: Window) -> str:
    """A read of the tier's policy that answers nothing (no measurement has an empty name) and
    fails, as a read of any measurement would, when the database or the policy does not exist
    (seen on 1.6.7: `database not found`, `retention policy not found`)."""
    rp = influxql_ident(tier.retention_policy) if tier.retention_policy else ""
    source = f"{influxql_ident(tier.database)}.{rp}./^$/"
    return f"SELECT * FROM {source} WHERE {_where(window, {})} LIMIT 1"


def check_query(
    tier: TierConfig, window: Window, tags: Mapping[str, str], names: Sequence[str]
) -> str:
    """One row for each of `names` with a point (matching `tags`) in `window` in the tier."""
    rp = influxql_ident(tier.retention_policy) if tier.retention_policy else ""
    sources = ", ".join(f"{influxql_ident(tier.database)}.{rp}.{influxql_ident(n)}" for n in names)
    return f"SELECT * FROM {sources} WHERE {_where(window, tags)} LIMIT 1"


def check_unquotable(tier: TierConfig, window: Window, tags: Mapping[str, str], name: str) -> str:
    """`check_query` for one name that no InfluxQL identifier can spell: its source is a regex
    that matches exactly that name, every character but `[A-Za-z0-9_]` written as Go's
    `\\x{…}` (so no carriage return, NUL or `/` reaches the query text)."""
    rp = influxql_ident(tier.retention_policy) if tier.retention_policy else ""
    spelled = "".join(
        c if c.isascii() and (c.isalnum() or c == "_") else f"\\x{{{ord(c):x}}}" for c in name
    )
    source = f"{influxql_ident(tier.database)}.{rp}./^{spelled}$/"
    return f"SELECT * FROM {source} WHERE {_where(window, tags)} LIMIT 1"


def _quotable(name: str) -> bool:
    try:
        influxql_ident(name)
    except TemplateError:
        return False
    return True


def listing_text(tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
    """What `plan` shows: the names query, then the check with `…` for the names it lists."""
    rp = influxql_ident(tier.retention_policy) if tier.retention_policy else ""
    source = f"{influxql_ident(tier.database)}.{rp}.…"
    return (
        f"{names_query(tier)}; SELECT * FROM {source} WHERE {_where(window, tags)} LIMIT 1 "
        f"(… the names listed that the pattern matches, {GROUP} per statement; the first "
        f"request also reads {source[:-1]}/^$/, which fails if the database or policy does not "
        "exist)"
    )


def _where(window: Window, tags: Mapping[str, str]) -> str:
    where = [f"time >= {influxql_time(window.start)}", f"time < {influxql_time(window.stop)}"]
    where += [f"{influxql_ident(k)} = {influxql_string(v)}" for k, v in sorted(tags.items())]
    return " AND ".join(where)


async def list_measurements(
    engine: Engine,
    tier: TierConfig,
    window: Window,
    tags: Mapping[str, str],
    wanted: Callable[[str], bool],
) -> list[str]:
    # `SHOW MEASUREMENTS ON` a database that does not exist answers no names and no error
    # (seen on 1.6.7), and names the pattern refuses are not read: the tier's own policy is
    # read once anyway (`exists_query`), so a database or policy that does not exist fails the
    # listing as it fails any other read of the tier, rather than find none matched.
    request = f"{names_query(tier)}; {exists_query(tier, window)}"
    listed = await engine.query(request, database=tier.database)
    names = sorted({str(row[0]) for series in listed for row in series.values if row})
    found: set[str] = set()
    candidates = [name for name in names if wanted(name)]
    plain = [name for name in candidates if _quotable(name)]
    statements = [
        check_query(tier, window, tags, plain[at : at + GROUP])
        for at in range(0, len(plain), GROUP)
    ]
    # A name no identifier can spell (a carriage return or NUL: influxd takes both in line
    # protocol) is checked through a regex matching it alone, so that only a window where it
    # has points fails for it (when its export cannot quote it), not every window of the tier.
    statements += [
        check_unquotable(tier, window, tags, name) for name in candidates if not _quotable(name)
    ]
    for at in range(0, len(statements), STATEMENTS):
        text = "; ".join(statements[at : at + STATEMENTS])
        found.update(s.name for s in await engine.query(text, database=tier.database) if s.values)
    return sorted(found)
