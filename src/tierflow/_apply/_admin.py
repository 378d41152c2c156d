"""`tierflow apply`'s calls to the servers and the filesystem, per dialect: reading what they
hold (databases, retention policies, buckets, directories, and the data a shrinking retention
would delete) and making one change."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tierflow._apply._model import (
    Bucket,
    BucketPlace,
    CreateBucket,
    Directory,
    Expiring,
    MakeDirectory,
    Observed,
    Policy,
    PolicyPlace,
    Shrink,
    Statement,
    Step,
    UpdateBucket,
    parse_go_duration,
)
from tierflow._apply._plan import groups
from tierflow._config import Config, InfluxDB1Connection, InfluxDB2Connection
from tierflow._engines.flux._literals import flux_string, flux_time
from tierflow._engines.influxql._engine import InfluxQLEngine
from tierflow._errors import EngineError
from tierflow._templates import influxql_ident, influxql_time

if TYPE_CHECKING:
    from tierflow._engines.flux._engine import FluxEngine

__all__ = ["Engines", "expiring", "expiring_flux_script", "observe", "send"]


async def send(step: Step, engines: Engines) -> None:
    """Make one change."""
    match step:
        case Statement(connection, text):
            await engines.influxql(connection).query(text)
        case CreateBucket(connection, body):
            await engines.flux(connection).create_bucket(body)
        case UpdateBucket(connection, bucket_id, body):
            await engines.flux(connection).update_bucket(bucket_id, body)
        case MakeDirectory(path):
            path.mkdir(parents=True, exist_ok=True)


class Engines:
    """One bare engine per connection (no retry layer: apply is run by a person, who can run it
    again), closed together."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._influxql: dict[str, InfluxQLEngine] = {}
        self._flux: dict[str, FluxEngine] = {}

    def influxql(self, name: str) -> InfluxQLEngine:
        if name not in self._influxql:
            connection = self.config.connections[name]
            assert isinstance(connection, InfluxDB1Connection)
            self._influxql[name] = InfluxQLEngine(name, connection)
        return self._influxql[name]

    def flux(self, name: str) -> FluxEngine:
        if name not in self._flux:
            from tierflow._engines.flux._engine import FluxEngine

            connection = self.config.connections[name]
            assert isinstance(connection, InfluxDB2Connection)
            self._flux[name] = FluxEngine(name, connection)
        return self._flux[name]

    async def aclose(self) -> None:
        for engine in [*self._influxql.values(), *self._flux.values()]:
            await engine.aclose()


# -- observing (reads only) ----------------------------------------------------------------------


async def observe(config: Config, engines: Engines) -> Observed:
    """Ask each server (and the filesystem) about every declared tier; change nothing."""
    observed = Observed()
    existing: dict[str, set[str]] = {}
    for connection, database in groups(config, "influxdb1"):
        engine = engines.influxql(connection)
        if connection not in existing:
            existing[connection] = await _databases(engine)
        observed.databases[(connection, database)] = (
            await _policies(engine, database) if database in existing[connection] else None
        )
    for connection, name in groups(config, "influxdb2"):
        flux = engines.flux(connection)
        if connection not in observed.orgs:
            observed.orgs[connection] = await flux.org_id()
        org_id = observed.orgs[connection]
        if org_id is not None:
            found = await flux.find_bucket(name, org_id)
            observed.buckets[(connection, name)] = _bucket(found) if found else None
    for name, tier in config.tiers.items():
        if tier.archive is not None:
            observed.directories[name] = _directory(tier.archive, config)
    return observed


async def _databases(engine: InfluxQLEngine) -> set[str]:
    return {str(row[0]) for s in await engine.query("SHOW DATABASES") for row in s.values}


async def _policies(engine: InfluxQLEngine, database: str) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for series in await engine.query(f"SHOW RETENTION POLICIES ON {influxql_ident(database)}"):
        for values in series.values:
            row = dict(zip(series.columns, values, strict=False))
            try:
                duration = parse_go_duration(str(row["duration"]))
                shard = parse_go_duration(str(row["shardGroupDuration"])) or timedelta(0)
            except (KeyError, ValueError) as exc:
                raise EngineError(
                    f"connection {engine.name}: unexpected SHOW RETENTION POLICIES row {values}"
                ) from exc
            name = str(row["name"])
            policies[name] = Policy(name, duration, shard, bool(row.get("default")))
    return policies


def _bucket(found: Mapping[str, Any]) -> Bucket:
    rules = [r for r in found.get("retentionRules") or () if isinstance(r, dict)]
    rule = next((r for r in rules if r.get("type", "expire") == "expire"), {})
    every = int(rule.get("everySeconds") or 0)
    shard = int(rule.get("shardGroupDurationSeconds") or 0)
    return Bucket(
        str(found.get("id", "")),
        timedelta(seconds=every) if every else None,
        timedelta(seconds=shard) if shard else None,
    )


def _directory(url: str, config: Config) -> Directory:
    if url.startswith("s3://"):
        return Directory(url, None)
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            return Directory(url, None, problem=f"archive {url!r}: use file:///absolute/path")
        path = Path(unquote(parts.path))
    elif "://" in url:
        return Directory(url, None, problem=f"archive {url!r}: not a path, file:// or s3:// URL")
    else:
        # Relative to the config file, as the archive jobs read it.
        path = Path(url) if url.startswith("/") else config.path.parent / url
    if path.exists():
        if not path.is_dir():
            return Directory(url, path, problem=f"archive {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            return Directory(url, path, problem=f"archive directory {path} is not writable")
        return Directory(url, path, exists=True)
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Directory(
            url, path, problem=f"archive directory {path} cannot be made: {parent} is not writable"
        )
    return Directory(url, path)


# -- what a shrinking retention would delete (reads only) ----------------------------------------


async def expiring(shrink: Shrink, engines: Engines, now: datetime) -> Expiring:
    """Ask the server what it holds in `shrink.place` older than now − the new retention: the
    data it will delete once the shrink is made."""
    cutoff = now - shrink.new
    place = shrink.place
    if isinstance(place, PolicyPlace):
        return await _expiring_influxql(engines.influxql(place.connection), place, cutoff)
    return await _expiring_flux(engines.flux(place.connection), place, cutoff)


async def _expiring_influxql(
    engine: InfluxQLEngine, place: PolicyPlace, cutoff: datetime
) -> Expiring:
    """The oldest point first, one row per measurement (`first(*)` would not do: with several
    fields 1.x stamps it at the epoch, seen on 1.6.7); then, only if there is one, the count,
    which reads every value older than the cutoff."""
    source = f"{influxql_ident(place.database)}.{influxql_ident(place.policy)}./.*/"
    where = f"WHERE time < {influxql_time(cutoff)}"
    first = await engine.query(f"SELECT * FROM {source} {where} LIMIT 1")
    oldest = min(
        (
            (int(row[series.columns.index("time")]), series.name)
            for series in first
            for row in series.values
        ),
        default=None,
    )
    if oldest is None:
        return Expiring(place, cutoff)
    counted = await engine.query(f"SELECT count(*) FROM {source} {where}")
    count = sum(
        int(value)
        for series in counted
        for row in series.values
        for column, value in zip(series.columns, row, strict=False)
        if column != "time" and value is not None
    )
    return Expiring(place, cutoff, count, oldest[0], oldest[1])


def expiring_flux_script(bucket: str, cutoff: datetime) -> str:
    """Flux counting the field values of `bucket` before `cutoff` (per table, then summed: the
    values' types differ between tables, the counts' do not) and finding the oldest one."""
    return (
        f"data = from(bucket: {flux_string(bucket)})\n"
        f"    |> range(start: 0, stop: {flux_time(cutoff)})\n"
        'data\n    |> count()\n    |> group()\n    |> sum()\n    |> yield(name: "count")\n'
        "data\n    |> first()\n"
        '    |> keep(columns: ["_time", "_measurement"])\n'
        "    |> group()\n"
        '    |> min(column: "_time")\n'
        '    |> yield(name: "oldest")\n'
    )


async def _expiring_flux(engine: FluxEngine, place: BucketPlace, cutoff: datetime) -> Expiring:
    count, oldest, measurement = 0, None, None
    for series in await engine.query(expiring_flux_script(place.bucket, cutoff)):
        for row in series.values:
            found = dict(zip(series.columns, row, strict=False))
            if series.name == "count" and found.get("_value") is not None:
                count += int(found["_value"])
            elif series.name == "oldest" and found.get("time") is not None:
                oldest = int(found["time"])
                measurement = found.get("_measurement")
    return Expiring(place, cutoff, count, oldest, None if measurement is None else str(measurement))
