"""The 1.x export's pure parts: CSV regrouped into blocks at row ends outside quotes, and the
names a window file's columns get."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from tierflow._archive import Column, FieldType
from tierflow._archive._schema import column_names
from tierflow._engines.influxql._export import csv_blocks

cells = st.text(st.sampled_from(["a", ",", '"', "\n", "\r", " ", "é"]), max_size=8)


def _cell(text: str) -> str:
    """As Go's encoding/csv writes a field (influxd's CSV): quoted when it holds a comma, a
    quote, a CR or LF, or starts with a space; quotes doubled."""
    if text == "" or not (any(c in text for c in ',"\r\n') or text[0] == " "):
        return text
    return '"' + text.replace('"', '""') + '"'


def _csv(rows: list[list[str]]) -> bytes:
    lines = [["name", "tags", "time", "v"], *rows]
    return "".join(",".join(map(_cell, line)) + "\n" for line in lines).encode()


async def _pieces(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        yield body[position : position + size]
        position += size
    yield body[position:]


async def _blocks(body: bytes, sizes: list[int], block: int) -> list[bytes]:
    return [piece async for piece in csv_blocks(_pieces(body, sizes), size=block)]


@settings(max_examples=200)
@given(
    rows=st.lists(st.lists(cells, min_size=4, max_size=4), min_size=1, max_size=30),
    sizes=st.lists(st.integers(1, 40), max_size=30),
    block=st.integers(1, 64),
)
def test_blocks_end_at_row_ends_outside_quotes_whatever_the_sizes(
    rows: list[list[str]], sizes: list[int], block: int
) -> None:
    body = _csv(rows)
    blocks = asyncio.run(_blocks(body, sizes, block))
    header = body[: body.index(b"\n") + 1]
    parsed: list[list[str]] = []
    for one in blocks:
        assert one.startswith(header)
        # Each block parses alone, a quoted newline kept inside its value.
        parsed.extend(list(csv.reader(io.StringIO(one.decode(), newline="")))[1:])
    assert parsed == rows


def test_column_names_keep_every_column_apart() -> None:
    columns = [
        Column("tag", "x"),
        Column("field", "x", FieldType.FLOAT),
        Column("field", "v", FieldType.INTEGER),
        Column("field", "v", FieldType.FLOAT),
        Column("tag", "x::field"),  # a tag literally named like the renamed field
        Column("field", "time", FieldType.BOOLEAN),
        Column("field", "plain", FieldType.STRING),
    ]
    assert column_names(columns) == {
        Column("tag", "x"): "x",
        Column("tag", "x::field"): "x::field",
        Column("field", "plain", FieldType.STRING): "plain",
        Column("field", "time", FieldType.BOOLEAN): "time::field",
        Column("field", "v", FieldType.FLOAT): "v::float",
        Column("field", "v", FieldType.INTEGER): "v::integer",
        Column("field", "x", FieldType.FLOAT): "x::field#2",
    }
