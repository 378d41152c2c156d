"""The SQL safety checker (see `tierflow._query_checks` for the rules every dialect keeps), read
through a real SQL parser (sqlglot, Postgres dialect: DataFusion's quoting and literals are
Postgres's, `"name"` and `'text'`), not regexes:

- only `SELECT`, or `INSERT INTO "<dest database>"."<table>" SELECT …` (how a 3.x query says
  where tierflow writes its rows): no DDL, no DELETE/UPDATE, no other statement;
- every SELECT that reads a table is bounded by exactly the window: its WHERE holds
  `"time" >= <start> AND "time" < <stop>` at its top level (no OR beside them), the bounds
  timestamp literals equal to the window's;
- no table read renames its columns (`AS "c"("a", "time")`: `"time"` would be another
  column);
- every table read names its database (`"hot"."cpu"`: a 3.x query runs in one database, and
  the engine sends it there);
- every name is a quoted identifier (`"cpu"`, never `cpu`: DataFusion folds unquoted names to
  lower case, so a mis-quoted name reads another column or none);
- every result is aggregated (GROUP BY or an aggregate) or limited: on 3.x every row comes back
  to tierflow, so a raw copy would stream the whole source through it;
- a query job must write (`INSERT INTO` the dest database).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from sqlglot import exp

    from tierflow._query_checks import Target

__all__ = ["parse_statements", "sql_problems"]

READ_DIALECT = "postgres"
_AGGREGATES = frozenset(
    {
        "avg",
        "count",
        "first_value",
        "last_value",
        "max",
        "median",
        "min",
        "stddev",
        "sum",
        "array_agg",
        "approx_distinct",
        "approx_median",
        "approx_percentile_cont",
        "selector_first",
        "selector_last",
        "selector_min",
        "selector_max",
        "var",
        "variance",
        "stddev_pop",
        "stddev_samp",
        "var_pop",
        "var_samp",
        "bit_and",
        "bit_or",
        "bool_and",
        "bool_or",
        "string_agg",
    }
)


def parse_statements(text: str) -> list[exp.Expr]:
    """The statements of `text` as sqlglot trees (empty ones left out); `ValueError` with the
    parser's message when it does not parse."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    try:
        found = sqlglot.parse(text, read=READ_DIALECT)
    except SqlglotError as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return [statement for statement in found if statement is not None]


def sql_problems(text: str, window: Window, dest: Target, require_write: bool) -> Iterator[str]:
    from sqlglot import exp

    try:
        statements = parse_statements(text)
    except ValueError as exc:
        yield f"the SQL does not parse: {exc}"
        return
    if not statements:
        yield "no statement: the query is empty"
        return
    writes = 0
    for number, statement in enumerate(statements, 1):
        where = f"statement {number}"
        select: exp.Expr | None = statement
        if isinstance(statement, exp.Insert):
            writes += 1
            yield from _insert_problems(statement, dest, where)
            select = statement.expression
        if not isinstance(select, exp.Query):
            kind = statement.key.upper()
            yield (
                f"{where}: {kind} is not allowed: only SELECT, or INSERT INTO the dest "
                f"database {dest.database!r} … SELECT"
            )
            continue
        yield from _quoting_problems(statement, where)
        yield from _database_problems(select, where)
        yield from _bound_problems(select, window, where)
        if not _reduced(select):
            yield (
                f"{where}: returns rows to tierflow with neither aggregation (GROUP BY or an "
                "aggregate) nor LIMIT"
            )
    if require_write and not writes:
        yield (
            f'no INSERT INTO: a query job must write to its dest database, as INSERT INTO "'
            f'{dest.database}"."<table>" SELECT …'
        )


def _insert_problems(statement: exp.Insert, dest: Target, where: str) -> Iterator[str]:
    from sqlglot import exp

    target = statement.this
    if isinstance(target, exp.Schema):
        if target.expressions:
            yield (
                f"{where}: INSERT INTO … (column list): tierflow writes the SELECT's columns by "
                'their own names and cannot apply a column list; name each with AS "<column>"'
            )
        target = target.this
    if not isinstance(target, exp.Table) or not target.name:
        yield f'{where}: INSERT INTO must name a table, as "{dest.database}"."<table>"'
        return
    if target.args.get("catalog") is not None or not target.db:
        yield (
            f"{where}: INSERT INTO {target.sql(READ_DIALECT)} must name the dest database and a "
            f'table, as "{dest.database}"."<table>"'
        )
    elif target.db != dest.database:
        yield (
            f"{where}: INSERT INTO database {target.db!r}, not the job's dest database "
            f"{dest.database!r}"
        )


def _quoting_problems(statement: exp.Expr, where: str) -> Iterator[str]:
    from sqlglot import exp

    for identifier in statement.find_all(exp.Identifier):
        if not identifier.quoted and not isinstance(identifier.parent, exp.DataType):
            name = identifier.name
            yield (
                f'{where}: the name {name} is not quoted: write "{name}" (sql_ident); '
                "unquoted names are folded to lower case"
            )


def _database_problems(query: exp.Expr, where: str) -> Iterator[str]:
    """A 3.x query runs in one database: the engine learns which from the tables' names."""
    from sqlglot import exp

    tables = [
        t
        for t in query.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.db not in {"information_schema", "iox"}
    ]
    for table in tables:
        if not table.db:
            yield (
                f'{where}: the table "{table.name}" must name its database, as '
                f'"<source database>"."{table.name}" ({{{{ source.database | sql_ident }}}})'
            )
    if len({t.db for t in tables if t.db}) > 1:
        yield f"{where}: reads tables of several databases; a 3.x query runs in one"


def _bound_problems(query: exp.Expr, window: Window, where: str) -> Iterator[str]:
    from sqlglot import exp

    for select in query.find_all(exp.Select):
        if not any(isinstance(f, exp.Table) for f in _sources(select)):
            continue
        for table in _sources(select):
            alias = table.args.get("alias") if isinstance(table, exp.Table) else None
            if isinstance(alias, exp.TableAlias) and alias.columns:
                yield (
                    f'{where}: the table "{table.name}" AS {alias.sql(READ_DIALECT)} renames its '
                    'columns: "time" in the WHERE would then be another column, and the bound '
                    "would not bound the read; name the table without a column list"
                )
        clause = select.args.get("where")
        terms = _conjuncts(clause.this) if clause is not None else []
        for op, bound, name in ((exp.GTE, window.start, "start"), (exp.LT, window.stop, "stop")):
            sign = ">=" if op is exp.GTE else "<"
            said = [t for t in terms if isinstance(t, op) and _is_time(t.this)]
            if not said:
                yield (
                    f'{where}: the WHERE must bound "time" {sign} the window\'s {name} '
                    f"{isoformat(bound)} at its top level (no OR beside it)"
                )
                continue
            for term in said:
                value = term.expression
                if _timestamp(value) != bound:
                    yield (
                        f'{where}: "time" {sign} {value.sql(READ_DIALECT)} is not the '
                        f"window's {name}: write {sign} TIMESTAMP '{isoformat(bound)}'"
                    )
        for other in terms:
            if _is_time(getattr(other, "this", None)) and isinstance(
                other, exp.GT | exp.LTE | exp.EQ | exp.NEQ
            ):
                yield f'{where}: the time bound must be "time" >= start AND "time" < stop'


def _sources(select: exp.Select) -> list[exp.Expr]:
    from sqlglot import exp

    found: list[exp.Expr] = []
    source = select.args.get("from_") or select.args.get("from")
    if isinstance(source, exp.From):
        found.append(source.this)
    found += [join.this for join in select.args.get("joins") or ()]
    return found


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    from sqlglot import exp

    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _is_time(node: object) -> bool:
    from sqlglot import exp

    return isinstance(node, exp.Column) and node.name == "time" and not node.table


def _timestamp(node: exp.Expr) -> datetime | None:
    """A bound written as `TIMESTAMP '…'`, `'…'` or `CAST('…' AS TIMESTAMP)`, as UTC."""
    from sqlglot import exp

    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.TIMESTAMP):
        node = node.this
    if not isinstance(node, exp.Literal) or not node.is_string:
        return None
    return parse_rfc3339(node.this)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 time with an explicit zone (`Z` or an offset) as a UTC datetime, to the
    microsecond; None when it is not one, has no zone, or has digits below the microsecond
    that are not zero (a window never does)."""
    head, dot, rest = text.partition(".")
    digits = rest.rstrip("Z")
    zone = ""
    if dot:
        for sign in ("+", "-"):
            if sign in digits:
                digits, _, offset = digits.partition(sign)
                zone = sign + offset
        if rest.endswith("Z"):
            zone = "Z"
        if not digits.isdigit() or (len(digits) > 6 and digits[6:].strip("0")):
            return None
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    if not (text.endswith("Z") or text[-6:-5] in {"+", "-"}):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _reduced(query: exp.Expr) -> bool:
    from sqlglot import exp

    # A query in parentheses (a part of a UNION) is reduced when what it holds is.
    while isinstance(query, exp.Subquery) and not query.args.get("alias"):
        query = query.this
    if not isinstance(query, exp.Select):
        return (
            all(_reduced(part) for part in (query.left, query.right))
            if isinstance(query, exp.SetOperation)
            else False
        )
    if query.args.get("group") is not None or query.args.get("limit") is not None:
        return True
    for node in query.expressions:
        for function in node.find_all(exp.Func):
            if function.find_ancestor(exp.Window) is not None:
                # `count(*) OVER (…)`: a window function answers a row per row it reads.
                continue
            if function.find_ancestor(exp.Select) is not query:
                # An aggregate of a subquery (`(SELECT count(*) …) AS "n"`) reduces that
                # subquery, not this SELECT's rows.
                continue
            if isinstance(function, exp.AggFunc):
                return True
            if isinstance(function, exp.Anonymous) and function.name.lower() in _AGGREGATES:
                return True
    return False
