"""Read-aggregate-write: how a 3.x engine runs a downsample or a query job, since 3.x has no
`SELECT … INTO`.

Each statement is `INSERT INTO "<dest database>"."<table>" SELECT … FROM "<source database>".
"<table>" …` (checked before dispatch by `_checks`). For each, the engine:

1. sends the SELECT, its tables unqualified, to `/api/v3/query_sql` in the source database
   (a 3.x query runs in one database), asking for Parquet: the one answer format that carries
   every column's type exactly (int64 vs uint64 vs float64, a tag's Dictionary type);
2. for the built-in downsample, adds every tag column of the source table (read from
   `information_schema.columns`: 3.x's tags are its Dictionary(Int32, Utf8) columns) to the
   SELECT and the GROUP BY, as InfluxQL's `GROUP BY time(…), *`;
3. turns the answer into points as it arrives (spooled, then read a bounded batch at a time:
   `_export.parquet_answer_batches`, so memory does not grow with the answer): `time` is the
   point's time (nanoseconds; an answer whose times lost digits is refused), Dictionary
   columns are tags, every other column a field of its exact type (float64, int64, uint64,
   bool, string; any other type is refused, never converted); null cells are left out and a
   row without a field is not written, as `SELECT … INTO` writes neither;
4. writes them to the dest table through the shared writer (`tierflow._transfer`: bounded
   bodies, `accept_partial=false`, a refusal fails the window).

Sent text is cut from the rendered text at token positions the SQL tokenizer gives; nothing is
regenerated from a parse tree, so what runs is what `plan` shows, less the INSERT clause and
the databases' names, plus the tag columns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tierflow._engines._base import Execution
from tierflow._errors import QueryError

if TYPE_CHECKING:
    from sqlglot.tokenizer_core import Token

    from tierflow._archive import PointBatch
    from tierflow._engines._base import Engine
    from tierflow._engines.sql._engine import InfluxDB3Engine
    from tierflow._templates import RenderedQuery

__all__ = [
    "FIELD_TYPES",
    "Received",
    "Statement",
    "read_statement",
    "run_statements",
    "split_statements",
    "table_columns",
    "tag_columns",
]

#: The built-in template whose statements group by every tag column.
BUILTIN_DOWNSAMPLE = "sql/downsample.sql.j2"
#: The schemas inside a 3.x database (a table qualified by one is not in another database).
_SCHEMAS = frozenset({"information_schema", "iox"})
#: Rows per batch handed to the writer (it splits bodies further by size).
BATCH_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a rendered query, ready to send."""

    #: Where its rows go (None: a plain SELECT, read only).
    dest_database: str | None
    dest_table: str | None
    #: The database its tables are read from ("" when they do not say), and the table (the
    #: first it reads).
    source_database: str
    source_table: str
    #: The SELECT as sent: tables unqualified; `{tags}` places not yet filled.
    select: str
    #: Character offsets in `select` where the tag columns go (`"a", "b", ` after SELECT,
    #: `, "a", "b"` at the end of the GROUP BY), when the statement groups by every tag.
    tag_places: tuple[int, int] | None
    #: Where the statement names a column (start, end past the quote, name, what stands for
    #: it when the table lacks it), in `select`, when it groups by every tag.
    column_places: tuple[tuple[int, int, str, str], ...] = ()

    def with_tags(self, tags: list[str], columns: Collection[str] | None = None) -> str:
        """The SELECT with `tags` (column names) in its select list and GROUP BY. With the
        table's `columns`, a name that is not one of them (DataFusion refuses a column the
        table does not have) is sent as a null, as InfluxQL reads what a point lacks: in the
        WHERE a tag filter as `NULL` (a missing tag is "", which the built-in template
        filters as `IS NULL`), in the select list an aggregate's field as a float null (the
        aggregate is then null, and a null cell is not written, as INTO leaves out the
        aggregates of a field the measurement does not have)."""
        from tierflow._engines.sql._literals import sql_ident

        text = self.select
        if columns is not None:
            for begin, end, name, null in reversed(self.column_places):
                if name not in columns:
                    text = text[:begin] + null + text[end:]
        if self.tag_places is None or not tags:
            return text
        names = ", ".join(sql_ident(tag) for tag in tags)
        head = self.tag_places[0]
        end = self.tag_places[1] + len(text) - len(self.select)
        return f"{text[:head]} {names},{text[head:end]}, {names}{text[end:]}"


def split_statements(text: str, *, every_tag: bool) -> list[Statement]:
    """The statements of `text`, each parsed (sqlglot) for where it reads and writes and cut
    (at the tokenizer's positions) into the SELECT that is sent. `ValueError` names what is
    missing: a statement that reads no table, or tables of several databases."""
    from sqlglot.tokenizer_core import TokenType
    from sqlglot.tokens import Tokenizer

    from tierflow._engines.sql._checks import READ_DIALECT

    pieces: list[list[Token]] = [[]]
    for token in Tokenizer(dialect=READ_DIALECT).tokenize(text):
        if token.token_type == TokenType.SEMICOLON:
            pieces.append([])
        else:
            pieces[-1].append(token)
    return [
        _statement(text[piece[0].start : piece[-1].end + 1], piece, number, every_tag)
        for number, piece in enumerate((p for p in pieces if p), 1)
    ]


def _statement(part: str, tokens: list[Token], number: int, every_tag: bool) -> Statement:
    from sqlglot import exp
    from sqlglot.tokenizer_core import TokenType

    from tierflow._engines.sql._checks import parse_statements

    (tree,) = parse_statements(part)
    where = f"statement {number}"
    base = tokens[0].start
    dest_db = dest_table = None
    query = tree
    insert_end = -1
    if isinstance(tree, exp.Insert):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        dest_db, dest_table = target.db, target.name
        insert_end = int(target.this.meta.get("end", -1))
        query = tree.expression
    # `information_schema.columns`, `iox.cpu`: schemas of the one database a query runs in.
    tables = [
        t
        for t in query.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.db not in _SCHEMAS
    ]
    if not tables:
        raise ValueError(f"{where}: reads no table")
    databases = {t.db for t in tables}
    if len(databases) != 1:
        raise ValueError(
            f"{where}: every table it reads must name the same source database "
            f'(FROM "<database>"."<table>"); found {sorted(databases)}'
        )
    # The query after an INSERT's target; a statement that only reads is sent whole (it may
    # begin with a parenthesis: `(SELECT … LIMIT 1) UNION ALL (SELECT …)`).
    head = next(
        (
            t.start - base
            for t in tokens
            if t.token_type in {TokenType.SELECT, TokenType.WITH} and t.start - base > insert_end
        ),
        None,
    )
    if head is not None and not isinstance(tree, exp.Insert):
        head = 0
    if head is None:
        raise ValueError(f"{where}: has no SELECT")
    # Cut each `"database".` in front of a table name: a 3.x query runs in one database.
    cuts = sorted(
        (int(t.args["db"].meta["start"]) - head, int(t.this.meta["start"]) - head)
        for t in tables
        if t.db
    )
    select = part[head:]
    for begin, end in reversed(cuts):
        select = select[:begin] + select[end:]
    places = None
    names: list[tuple[int, int, str, str]] = []
    if every_tag:
        if not isinstance(query, exp.Select) or query.args.get("group") is None:
            raise ValueError(f"{where}: a downsample statement must be SELECT … GROUP BY")
        places = (len("SELECT"), len(select))
        clause = query.args.get("where")
        found = [(c, "NULL") for c in clause.find_all(exp.Column)] if clause is not None else []
        for expression in query.expressions:
            found += [(c, "CAST(NULL AS DOUBLE)") for c in expression.find_all(exp.Column)]
        for column, null in found:
            if column.table or "start" not in column.this.meta:
                continue
            begin, end = int(column.this.meta["start"]) - head, int(column.this.meta["end"]) + 1
            end -= head
            # Where it is once the databases' names are cut (they come before it).
            shift = sum(e - b for b, e in cuts if e <= begin)
            names.append((begin - shift, end - shift, column.name, null))
    source_db = databases.pop()
    places_of_names = tuple(sorted(names))
    return Statement(
        dest_db, dest_table, source_db, tables[0].name, select, places, places_of_names
    )


async def table_columns(engine: Engine, database: str, table: str) -> dict[str, str]:
    """`table`'s columns and their Arrow types as `information_schema.columns` names them
    (`Dictionary(Int32, Utf8)` for a tag, `Timestamp(ns)`, `Float64`, `Int64`, `UInt64`,
    `Boolean`, `Utf8` for fields); empty when there is no such table."""
    from tierflow._engines.sql._literals import sql_literal

    text = (
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = 'iox' AND table_name = {sql_literal(table)}"
    )
    series = await engine.query(text, database=database)
    rows = [dict(zip(s.columns, row, strict=True)) for s in series for row in s.values]
    return {str(row["column_name"]): str(row.get("data_type", "")) for row in rows}


#: A field column's Arrow type (as information_schema names it) → its InfluxDB field type.
FIELD_TYPES = {
    "Float64": "float",
    "Int64": "integer",
    "UInt64": "unsigned",
    "Boolean": "boolean",
    "Utf8": "string",
}


async def tag_columns(engine: Engine, database: str, table: str) -> list[str]:
    """The tag columns of `table` (3.x stores tags as Dictionary(Int32, Utf8) columns)."""
    columns = await table_columns(engine, database, table)
    return sorted(name for name, kind in columns.items() if kind.startswith("Dictionary"))


async def run_statements(engine: InfluxDB3Engine, query: RenderedQuery) -> Execution:
    """Run every statement of `query` (see the module's docstring); `points_written` counts
    the points written. Every statement is checked before the first is sent."""
    from tierflow._transfer import write_batches

    try:
        statements = split_statements(query.text, every_tag=query.template == BUILTIN_DOWNSAMPLE)
    except ValueError as exc:
        raise QueryError(f"template {query.template}: {exc}") from None
    for statement in statements:
        if not statement.source_database:
            raise QueryError(
                f"template {query.template}: every table a statement reads must name its "
                'database (FROM "<database>"."<table>"); nothing was sent'
            )
        if statement.dest_database is None or statement.dest_table is None:
            raise QueryError(
                f"template {query.template}: a statement has no INSERT INTO: on InfluxDB 3 "
                'a query that writes names its dest as INSERT INTO "<database>"."<table>"; '
                "nothing was sent"
            )
    written = sent = 0
    received = Received()
    for statement in statements:
        assert statement.dest_database is not None  # checked above
        assert statement.dest_table is not None
        moved = await write_batches(
            engine,
            _named(statement.dest_table, read_statement(engine, statement, received=received)),
            database=statement.dest_database,
            retention_policy=None,
            max_concurrency=engine.config.max_concurrency,
        )
        written += moved.points
        sent += moved.bytes_sent
    return Execution(written, sent, received.bytes)


@dataclass
class Received:
    """Bytes of answers read so far."""

    bytes: int = 0


async def read_statement(
    engine: InfluxDB3Engine,
    statement: Statement,
    database: str | None = None,
    *,
    received: Received | None = None,
) -> AsyncIterator[PointBatch]:
    """One statement's answer as typed point batches, streamed: the tag columns added when it
    groups by every tag, the SELECT sent to its source database (or `database` when its tables
    do not name one), the Parquet answer spooled as it arrives (in memory up to a bound, else
    in a mapped local file: `_export.spool`) and read `BATCH_ROWS` rows at a time
    (`_export.parquet_answer_batches`), so memory does not grow with the answer. Its size in
    bytes is added to `received`."""
    from tierflow._engines.sql._export import answer_pieces, parquet_answer_batches

    source = statement.source_database or database
    if not source:
        raise QueryError("the statement's tables name no database and none was given")
    tags: list[str] = []
    columns: dict[str, str] | None = None
    if statement.tag_places is not None:
        columns = await table_columns(engine, source, statement.source_table)
        if not columns:
            # No such table: nothing was ever written to it. InfluxQL's SELECT … INTO from a
            # measurement that does not exist writes nothing and succeeds; so does this (3.x
            # would refuse the SELECT: "table … not found").
            return
        tags = sorted(name for name, kind in columns.items() if kind.startswith("Dictionary"))
    pieces = answer_pieces(
        engine, statement.with_tags(tags, columns), database=source, fmt="parquet"
    )
    if received is not None:
        pieces = _counted(pieces, received)
    # Tags are the answer's Dictionary columns (3.x's tag type; `with_tags` adds the table's).
    async for batch in parquet_answer_batches(
        pieces, measurement=statement.dest_table or statement.source_table, batch_rows=BATCH_ROWS
    ):
        yield _checked(batch)


async def _counted(pieces: AsyncIterator[bytes], received: Received) -> AsyncIterator[bytes]:
    async for piece in pieces:
        received.bytes += len(piece)
        yield piece


async def _named(
    table: str, batches: AsyncIterator[PointBatch]
) -> AsyncIterator[tuple[str, PointBatch]]:
    async for batch in batches:
        yield table, batch


def _checked(batch: PointBatch) -> PointBatch:
    """`batch` if each field is one of InfluxDB's types exactly (float64, int64, uint64,
    boolean, string): any other column type is refused, never converted."""
    for name in batch.fields:
        kind = batch.data.schema.field(name).type
        if kind not in _FIELD_TYPES:
            raise QueryError(
                f"column {name!r} is {kind}: a field must be float64, int64, uint64, boolean "
                "or string (cast it in the SELECT)"
            )
    return batch


def _field_types() -> frozenset[object]:
    import pyarrow as pa

    return frozenset({pa.float64(), pa.int64(), pa.uint64(), pa.bool_(), pa.string()})


#: A field column's types (after `_export.point_batch` decoded dictionaries and other strings).
_FIELD_TYPES = _field_types()
