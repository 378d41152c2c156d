"""The oracle of what an InfluxDB 1.x server holds: its TSM files and WAL, read off the disk.

`stored_points(server, db, rp)` runs `tests/tsmdump` (a Go program on InfluxDB 1.6.7's own
storage engine package, built by `scripts/bootstrap` into `.cache/tsmdump`) over the throwaway
server's `[data] dir` and `wal-dir`, and returns every point of one retention policy with its
exact InfluxDB type. Nothing goes through `/query` or through tierflow: floats keep their bits
(-0.0, subnormals), integers beyond 2**53 stay exact, strings keep quotes, backslashes and
newlines, and a field with one type in one shard and another in the next is read per shard.

The engine's rules for what a reader sees are applied here to the records tsmdump prints in
order: TSM files by name, then WAL segments by name; a later value wins on an equal timestamp;
a WAL delete removes what came before it (TSM tombstones are already applied by the reader).

The server keeps running while it is read. The files are listed before and after each read and
the read is retried when they changed (a snapshot or compaction moved data in between).
`flush_to_tsm` makes the server write its cache to TSM files, for tests that want the data there.

A missing binary skips the calling test on a developer's machine and fails it in CI (`CI=true`).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from tierflow.testing import ThrowawayInfluxd

__all__ = [
    "TSMDUMP_ENV_VAR",
    "FieldType",
    "FieldValue",
    "StoredPoint",
    "TsmOracleError",
    "flush_to_tsm",
    "merge_records",
    "read_disk",
    "require_tsmdump",
    "stored_points",
    "tsmdump_binary",
]

FieldType = Literal["float", "integer", "unsigned", "boolean", "string"]
FieldValue = float | int | bool | str

TSMDUMP_ENV_VAR = "TIERFLOW_TSMDUMP"
_DEFAULT_BINARY = Path(__file__).resolve().parent.parent / ".cache" / "tsmdump"
_FIELD_TYPES: frozenset[str] = frozenset(get_args(FieldType))
_READ_ATTEMPTS = 5
_RETRY_PAUSE_SECONDS = 0.2
_TIMEOUT_SECONDS = 300.0
# One shard's (shard id, composite TSM key); the key is raw bytes as the engine stores it.
_SeriesField = tuple[int, bytes]


class TsmOracleError(RuntimeError):
    """tsmdump failed, printed something this module cannot read, or the files kept changing."""


@dataclass(frozen=True, eq=False)
class StoredPoint:
    """One field value as the storage engine holds it.

    `tags` are the series key's, in its order (sorted by key); `time` is in nanoseconds;
    `shard` is the shard id the value lives in. Equality and hashing are exact: `type` counts
    and floats compare by their bits, so ``-0.0 != 0.0`` and ``1i != 1.0 != true`` here.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    field: str
    time: int
    type: FieldType
    value: FieldValue
    shard: int

    def exact(self) -> tuple[str, tuple[tuple[str, str], ...], str, int, FieldType, object]:
        """Everything but the shard, with a float replaced by its IEEE-754 bit pattern."""
        value: object = self.value
        if self.type == "float":
            value = _float_bits(float(self.value))
        return (self.measurement, self.tags, self.field, self.time, self.type, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredPoint):
            return NotImplemented
        return self.exact() == other.exact() and self.shard == other.shard

    def __hash__(self) -> int:
        return hash((self.exact(), self.shard))


def tsmdump_binary() -> Path | None:
    """`$TIERFLOW_TSMDUMP`, else `.cache/tsmdump`; None when that file is not there."""
    candidate = Path(os.environ.get(TSMDUMP_ENV_VAR) or _DEFAULT_BINARY)
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_tsmdump() -> Path:
    """The binary, else skip the calling test, or fail it when `CI=true` (CI must have it)."""
    binary = tsmdump_binary()
    if binary is not None:
        return binary
    wanted = os.environ.get(TSMDUMP_ENV_VAR) or str(_DEFAULT_BINARY)
    reason = (
        f"the TSM oracle {wanted} is not built: run scripts/bootstrap (it installs Debian's "
        "golang-go and golang-github-influxdb-influxdb-dev and builds tests/tsmdump)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def stored_points(
    server: ThrowawayInfluxd,
    database: str,
    retention_policy: str = "autogen",
    *,
    binary: Path | None = None,
) -> list[StoredPoint]:
    """Every value of `database`.`retention_policy` on the server's disk, sorted by
    (measurement, tags, field, time). The server may be running or stopped (files kept)."""
    return read_disk(
        server.tsm_dir,
        server.wal_dir,
        database=database,
        retention_policy=retention_policy,
        binary=binary,
    )


def read_disk(
    tsm_dir: Path,
    wal_dir: Path,
    *,
    database: str,
    retention_policy: str,
    binary: Path | None = None,
) -> list[StoredPoint]:
    """`stored_points` for any `[data] dir` and `wal-dir` pair (a server stopped or copied)."""
    tool = binary or require_tsmdump()
    roots = [tsm_dir / database / retention_policy, wal_dir / database / retention_policy]
    command = [
        str(tool),
        f"-datadir={tsm_dir}",
        f"-waldir={wal_dir}",
        f"-database={database}",
        f"-retention={retention_policy}",
    ]
    for _ in range(_READ_ATTEMPTS):
        before = _fingerprint(roots)
        result = subprocess.run(command, capture_output=True, timeout=_TIMEOUT_SECONDS, check=False)
        if _fingerprint(roots) != before:
            time.sleep(_RETRY_PAUSE_SECONDS)
            continue
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", errors="replace").strip()
            raise TsmOracleError(f"tsmdump exited with {result.returncode}: {stderr}")
        return merge_records(json.loads(line) for line in result.stdout.splitlines())
    raise TsmOracleError(
        f"the files of {database}.{retention_policy} changed during each of {_READ_ATTEMPTS} "
        "reads; stop writing to it (or stop the server) before reading"
    )


def merge_records(records: Iterable[Mapping[str, Any]]) -> list[StoredPoint]:
    """Apply tsmdump's records in order, as the engine does, and return what remains."""
    values: dict[_SeriesField, dict[int, tuple[FieldType, FieldValue]]] = {}
    names: dict[_SeriesField, tuple[str, tuple[tuple[str, str], ...], str]] = {}
    for record in records:
        shard = int(record["shard"])
        if record["op"] == "delete":
            low, high = int(record["min"]), int(record["max"])
            for key in record["keys"]:
                held = values.get((shard, _bytes(key)), {})
                for stamp in [t for t in held if low <= t <= high]:
                    del held[stamp]
            continue
        where = (shard, _bytes(record["key"]))
        names[where] = _names(record)
        kind = _field_type(record)
        held = values.setdefault(where, {})
        for stamp, raw in zip(record["times"], record["values"], strict=True):
            held[int(stamp)] = (kind, _value(kind, raw, record))
    points = [
        StoredPoint(*names[where], time=stamp, type=kind, value=value, shard=where[0])
        for where, held in values.items()
        for stamp, (kind, value) in held.items()
    ]
    points.sort(key=lambda p: (p.measurement, p.tags, p.field, p.time, p.shard))
    return points


def flush_to_tsm(server: ThrowawayInfluxd, database: str) -> None:
    """Make the running server write every shard's cache of `database` to TSM files.

    1.6.7 has no flush command; a backup snapshots each shard first (`Engine.Backup` →
    `CreateSnapshot` → `WriteSnapshot`), which empties the cache into a TSM file and removes
    the WAL segments it came from. The backup itself goes to a temp dir and is deleted.
    """
    with tempfile.TemporaryDirectory(prefix="tierflow-flush-") as scratch:
        result = subprocess.run(
            [
                server.binary,
                "backup",
                "-portable",
                "-db",
                database,
                "-host",
                server.rpc_address,
                scratch,
            ],
            capture_output=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace").strip()
        raise TsmOracleError(f"influxd backup of {database!r} failed: {output}")


def _fingerprint(roots: Iterable[Path]) -> list[tuple[str, int, int]]:
    seen = []
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while listing: the next listing differs
                seen.append((str(path), -1, -1))
                continue
            seen.append((str(path), stat.st_size, stat.st_mtime_ns))
    return seen


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _text(text: str, what: str, record: Mapping[str, Any]) -> str:
    raw = _bytes(text)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TsmOracleError(f"{what} {raw!r} in {record['source']} is not UTF-8") from exc


def _names(record: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...], str]:
    tags = tuple(
        (_text(key, "tag key", record), _text(value, "tag value", record))
        for key, value in record["tags"]
    )
    measurement = _text(record["measurement"], "measurement", record)
    return measurement, tags, _text(record["field"], "field key", record)


def _field_type(record: Mapping[str, Any]) -> FieldType:
    kind = record["type"]
    if kind not in _FIELD_TYPES:
        raise TsmOracleError(f"unknown value type {kind!r} in {record['source']}")
    return kind  # type: ignore[no-any-return]


def _value(kind: FieldType, raw: Any, record: Mapping[str, Any]) -> FieldValue:
    # bool is an int in Python: compare exact JSON types so true never passes as 1i.
    if kind == "boolean" and type(raw) is bool:
        return bool(raw)
    if kind == "string" and type(raw) is str:
        return _text(raw, "string value", record)
    if kind in ("integer", "unsigned") and type(raw) is int:
        return int(raw)
    if kind == "float" and type(raw) is int:
        return float(struct.unpack("<d", struct.pack("<Q", raw))[0])
    raise TsmOracleError(f"{kind} value {raw!r} in {record['source']}")


def _float_bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])
