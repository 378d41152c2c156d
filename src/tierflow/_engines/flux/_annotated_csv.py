"""InfluxDB 2.x query responses: annotated CSV, read as a stream of rows.

A response is a sequence of blocks; each starts with `#datatype`, `#group` and `#default`
annotation rows and a header row, followed by data rows (the first column is the annotation
column, empty on data rows) until a blank line. A failure once the stream has begun arrives as
a block whose header is `,error,reference`. Records are split at line ends outside quotes: CSV
doubles quotes inside quoted fields, so a record is complete once it holds an even number of `"`.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Block", "FluxResultError", "Row", "decode_value", "rfc3339_ns", "rows"]


class FluxResultError(Exception):
    """The server reported an error table inside a 200 response."""

    def __init__(self, message: str, reference: str) -> None:
        super().__init__(message)
        self.message = message
        self.reference = reference


@dataclass
class Block:
    """The annotations and header shared by the rows that follow them."""

    datatypes: list[str] = field(default_factory=list)
    groups: list[bool] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Row:
    block: Block
    cells: list[str]

    def record(self) -> dict[str, Any]:
        """The row as column name → typed value (empty cells take the block's default)."""
        values: dict[str, Any] = {}
        for index, name in enumerate(self.block.header):
            if index == 0:
                continue
            cell = self.cells[index] if index < len(self.cells) else ""
            if cell == "" and index < len(self.block.defaults):
                cell = self.block.defaults[index]
            kind = self.block.datatypes[index] if index < len(self.block.datatypes) else "string"
            values[name] = decode_value(cell, kind)
        return values


def _records(lines: Iterator[str]) -> Iterator[list[str]]:
    yield from csv.reader(lines)


async def rows(lines: AsyncIterable[bytes]) -> AsyncIterator[Row]:
    """Data rows of an annotated CSV stream, in order; raise FluxResultError on an error table."""
    block = Block()
    annotating = False
    pending = ""
    async for raw in lines:
        pending += raw.decode("utf-8")
        if pending.count('"') % 2:
            continue  # a quoted field goes on past this line end
        record, pending = pending, ""
        text = record.rstrip("\r\n")
        if not text:
            annotating = False
            continue
        (cells,) = list(_records(iter([text]))) or [[]]
        if cells and cells[0].startswith("#"):
            if not annotating:
                block, annotating = Block(), True
            _annotate(block, cells)
            continue
        if annotating or not block.header:
            block.header, annotating = cells, False
            continue
        if block.header[1:3] == ["error", "reference"]:
            raise FluxResultError(cells[1] if len(cells) > 1 else "", _cell(cells, 2))
        yield Row(block, cells)
    if pending.strip():
        raise ValueError("annotated CSV ends inside a quoted field")


def _cell(cells: list[str], index: int) -> str:
    return cells[index] if index < len(cells) else ""


def _annotate(block: Block, cells: list[str]) -> None:
    name = cells[0]
    if name == "#datatype":
        block.datatypes = cells
    elif name == "#group":
        block.groups = [cell == "true" for cell in cells]
    elif name == "#default":
        block.defaults = cells


def decode_value(cell: str, kind: str) -> Any:
    """A cell as Python: long/unsignedLong → int, double → float, boolean → bool,
    dateTime:RFC3339(Nano) → int nanoseconds since the epoch, anything else → str. Empty → None."""
    if cell == "" and kind != "string":
        return None
    if kind in {"long", "unsignedLong"}:
        return int(cell)
    if kind == "double":
        return float(cell)
    if kind == "boolean":
        return cell == "true"
    if kind.startswith("dateTime"):
        return rfc3339_ns(cell)
    return cell


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC timestamp, keeping all nine digits
    (datetime keeps six)."""
    from datetime import UTC, datetime

    body = text.rstrip("Z")
    seconds, _, fraction = body.partition(".")
    moment = datetime.fromisoformat(seconds).replace(tzinfo=UTC)
    whole = int(moment.timestamp())
    return whole * 1_000_000_000 + int((fraction + "000000000")[:9])
