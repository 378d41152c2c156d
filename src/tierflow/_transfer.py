"""Moving points in bulk: the write path (Arrow batches → line protocol → an engine's `write`),
shared by restore and cross-connection relays. What is read is each dialect's, as typed
batches streamed a chunk at a time (`Dialect.stage_window` for archives,
`Dialect.aggregate_batches` for relays).

Writes are encoded a batch at a time, split into bodies under the server's limit, and posted at
most `max_concurrency` at a time through the connection's retry layer; a body that cannot be
written fails the whole transfer, or with `isolate` (restores) only its measurement — nothing
is buffered across windows and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tierflow._archive import PointBatch
from tierflow._engines import Engine
from tierflow._errors import AuthError, EngineError, WriteRefusedError
from tierflow._http._status import LINE_REFUSED
from tierflow._lineprotocol import LineProtocolError, Piece, encode_batch

__all__ = [
    "Transfer",
    "WriteRefusedError",
    "write_batches",
]

#: 1.x refuses bodies over `max-body-size` (25 MB by default) with 413; stay well under it.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Transfer:
    """What a write moved."""

    points: int
    dropped: int
    bytes_sent: int
    requests: int
    #: Measurements refused and left out (`write_batches(isolate=True)`), one error each.
    failures: tuple[WriteRefusedError, ...] = ()


async def write_batches(
    engine: Engine,
    batches: AsyncIterable[tuple[str, PointBatch]],
    *,
    database: str,
    retention_policy: str | None,
    max_concurrency: int,
    max_body_bytes: int = MAX_BODY_BYTES,
    isolate: bool = False,
) -> Transfer:
    """Encode and write `(measurement, batch)` pairs; at most `max_concurrency` bodies in flight.

    A refusal (the encoder's, or the server's 400/413/422, e.g. a field type conflict) becomes a
    `WriteRefusedError` naming the measurement, the field and the time of the first offending
    point. By default the first failure cancels the rest and raises. With `isolate`, a refused
    measurement fails alone: its first refusal is kept in `Transfer.failures`, its later batches
    are skipped, and the other measurements are still written; other failures (unreachable
    server, credentials, a missing database) still raise, as every measurement would meet them.
    """
    slots = asyncio.Semaphore(max_concurrency)
    points = dropped = sent = requests = 0
    posts: dict[asyncio.Task[int], _Posted] = {}
    failed: dict[str, WriteRefusedError] = {}

    async def post(body: bytes) -> int:
        try:
            return await engine.write(body, database=database, retention_policy=retention_policy)
        finally:
            slots.release()

    def refused(error: WriteRefusedError) -> None:
        if not isolate:
            raise error
        # Bodies finish in any order: keep the earliest point refused.
        kept = failed.get(error.measurement)
        if kept is None or error.time_ns < kept.time_ns:
            failed[error.measurement] = error

    def settle(task: asyncio.Task[int]) -> None:
        nonlocal points, sent
        posted = posts.pop(task)
        try:
            sent += task.result()
        except EngineError as exc:
            if not _is_refusal(exc):
                raise
            refused(posted.refused(exc))
        else:
            points += len(posted.rows)

    try:
        async for measurement, batch in batches:
            if measurement in failed:
                continue
            try:
                encoded = encode_batch(
                    measurement,
                    batch.data,
                    tags=sorted(batch.tags),
                    fields=batch.fields,
                    keys=batch.keys,
                    flavour=engine.dialect.line_protocol,
                )
                pieces = list(encoded.split(max_body_bytes))
            except LineProtocolError as exc:
                refused(WriteRefusedError.of(measurement, batch, exc.column, exc.row, exc))
                continue
            dropped += encoded.dropped
            for piece in pieces:
                await slots.acquire()
                for done in [task for task in posts if task.done()]:
                    settle(done)  # raises the first failure unless isolated
                if measurement in failed:
                    slots.release()
                    break
                posts[asyncio.create_task(post(piece.body))] = _Posted(measurement, batch, piece)
                requests += 1
        while posts:
            await asyncio.wait(set(posts), return_when=asyncio.FIRST_COMPLETED)
            for done in [task for task in posts if task.done()]:
                settle(done)
    except BaseException:
        for task in posts:
            task.cancel()
        await asyncio.gather(*posts, return_exceptions=True)
        raise
    return Transfer(points, dropped, sent, requests, tuple(failed.values()))


# How 1.x words a field type conflict (tsdb/field_validator.go).
_CONFLICT_FIELD = re.compile(r'input field "(.*)" on measurement "')
# How 3.x does (influxdb3_write's validator: "invalid column type for column 'v', expected …").
_CONFLICT_COLUMN = re.compile(r"invalid column type for column '(.*?)', expected")


@dataclass(frozen=True, slots=True)
class _Posted:
    """A body in flight and where its lines came from, to name the point a refusal is about."""

    measurement: str
    batch: PointBatch
    piece: Piece

    @property
    def rows(self) -> pa.Array:
        return self.piece.rows

    def refused(self, exc: EngineError) -> WriteRefusedError:
        """The refusal, pinned on the line the server named (3.x: its number in the body), else
        on the field it named (its first point in this body holding a value), else on the
        body's first point."""
        rows = self.piece.rows
        text = str(exc)
        named = _CONFLICT_FIELD.search(text) or _CONFLICT_COLUMN.search(text)
        key = named.group(1) if named else None
        # The field's columns (one per type it has in the batch; `keys` maps them to `key`).
        columns = [name for name in self.batch.fields if self.batch.key(name) == key]
        line = LINE_REFUSED.search(text)
        if line is not None and 1 <= int(line.group(1)) <= len(rows):
            row = rows[int(line.group(1)) - 1].as_py()
            return WriteRefusedError.of(
                self.measurement, self.batch, key if columns else None, row, exc
            )
        if not columns:
            first = rows[0].as_py()
            return WriteRefusedError.of(self.measurement, self.batch, None, first, exc, exact=False)
        held = pc.is_valid(self.batch.data.column(columns[0]).take(rows))
        for column in columns[1:]:
            held = pc.or_(held, pc.is_valid(self.batch.data.column(column).take(rows)))
        row = rows[max(0, pc.index(held, True).as_py())].as_py()
        return WriteRefusedError.of(self.measurement, self.batch, key, row, exc)


def _is_refusal(exc: EngineError) -> bool:
    """Whether the server refused these points themselves (the same body would be refused
    again, whatever else is written), rather than failing for every write."""
    return not exc.transient and not isinstance(exc, AuthError) and exc.status in _REFUSALS


#: 400 a malformed line or a 1.x partial write (type conflict, beyond retention); 413 too
#: large; 422 a 2.x type conflict or point beyond retention. A 404 (no such database) is not
#: one: it would fail every measurement.
_REFUSALS = frozenset({400, 413, 422})
