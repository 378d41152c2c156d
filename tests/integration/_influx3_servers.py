"""The 3.x servers the integration tests run tierflow against, behind one small interface: the
DataFusion-backed stand-in (`tests/influx3_standin.py`) or a live InfluxDB 3.x (Core or
Enterprise) when `TIERFLOW_TEST_INFLUXDB3_URL` and `TIERFLOW_TEST_INFLUXDB3_TOKEN` are set.

Tests name their databases by role ("hot", "warm", "restored"); `name(role)` is what the server
calls it (the role itself on a stand-in, which is fresh for each test; on a live server a fresh
`tierflow_test_<hex>_<role>`, deleted afterwards). What a server holds is read with its own SQL
(`information_schema` and `SELECT *`, answered as Parquet), never through tierflow.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from tests.influx3_standin import Influx3StandIn, Recorded
from tests.integration import _influx3_checks as checks
from tests.integration.conftest import TierData

LIVE_ENV = ("TIERFLOW_TEST_INFLUXDB3_URL", "TIERFLOW_TEST_INFLUXDB3_TOKEN")


class Server3(Protocol):
    """A 3.x server as the tests use it; every `db` is a role, mapped by `name`."""

    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def requests(self) -> list[Recorded] | None:
        """The requests the server received, when it records them (the stand-in does)."""

    def name(self, db: str) -> str: ...
    def write(self, db: str, body: str) -> None: ...
    def sql(self, db: str, query: str) -> pa.Table: ...
    def create_database(self, db: str) -> None: ...
    def has_database(self, db: str) -> bool: ...


@dataclass
class StandIn3:
    """The stand-in, fresh for the test: a role is the database's name."""

    server: Influx3StandIn

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def requests(self) -> list[Recorded] | None:
        return self.server.requests

    def name(self, db: str) -> str:
        return db

    def write(self, db: str, body: str) -> None:
        self.server.write(db, body)

    def sql(self, db: str, query: str) -> pa.Table:
        return self.server.sql(db, query)

    def create_database(self, db: str) -> None:
        self.server.create_database(db)

    def has_database(self, db: str) -> bool:
        return db in self.server.databases


@dataclass
class Live3:
    """A live 3.x server reached with a plain HTTP client (`_influx3_checks.Client`); each role
    is a fresh database, deleted by `drop_all`."""

    client: checks.Client
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    made: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def token(self) -> str:
        return self.client.token

    @property
    def requests(self) -> list[Recorded] | None:
        return None

    def name(self, db: str) -> str:
        return self.made.setdefault(db, f"tierflow_test_{self.suffix}_{db}")

    def write(self, db: str, body: str) -> None:
        answer = self.client.write(self.name(db), body, accept_partial="false")
        assert answer.status == 204, f"write to {self.name(db)}: {answer}"

    def sql(self, db: str, query: str) -> pa.Table:
        answer = self.client.query(self.name(db), query, "parquet")
        assert answer.status == 200, f"{query!r} on {self.name(db)}: {answer}"
        return answer.table()

    def create_database(self, db: str) -> None:
        answer = self.client.create_database(self.name(db))
        assert answer.status in {200, 201, 204}, f"create {self.name(db)}: {answer}"

    def has_database(self, db: str) -> bool:
        return self.name(db) in self.client.databases()

    def drop_all(self) -> None:
        """Delete every database this test named that exists (a role may never be written)."""
        existing = set(self.client.databases())
        for name in self.made.values():
            if name in existing:
                answer = self.client.delete_database(name)
                assert answer.status in {200, 204}, f"delete {name}: {answer}"


def live_influx3() -> Iterator[Live3]:
    """The live 3.x server, its test databases deleted afterwards; skips, saying why, without
    one."""
    missing = [name for name in LIVE_ENV if not os.environ.get(name)]
    if missing:
        import pytest

        pytest.skip(f"live InfluxDB 3.x suite: set {', '.join(missing)} to run it")
    url, token = (os.environ[name] for name in LIVE_ENV)
    live = Live3(checks.Client(url, token))
    try:
        yield live
    finally:
        live.drop_all()


def column_types(server: Server3, db: str, measurement: str) -> dict[str, str]:
    """A table's columns and their Arrow types as `information_schema` names them."""
    text = (
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = 'iox' AND table_name = '{measurement.replace(chr(39), chr(39) * 2)}'"
    )
    table = server.sql(db, text)
    return {str(r["column_name"]): str(r["data_type"]) for r in table.to_pylist()}


def measurements(server: Server3, db: str) -> list[str]:
    if not server.has_database(db):
        return []
    text = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'"
    return sorted(str(name) for name in server.sql(db, text).column("table_name").to_pylist())


def read_tier3(server: Server3, db: str) -> TierData:
    """Every point of a database in `read_tier`'s shape; tags are the columns
    `information_schema` calls Dictionary, nulls are absent fields."""
    data: TierData = {}
    for name in measurements(server, db):
        kinds = column_types(server, db, name)
        tags = {k for k, v in kinds.items() if v.startswith("Dictionary")}
        table = server.sql(db, 'SELECT * FROM "' + name.replace('"', '""') + '"')
        times = table.column("time").cast(pa.int64()).to_pylist()
        for moment, row in zip(times, table.drop_columns(["time"]).to_pylist(), strict=True):
            key = (name, moment, frozenset((k, row[k]) for k in tags if row[k] is not None))
            assert key not in data, f"two rows for one point {key}"
            data[key] = {k: v for k, v in row.items() if k not in tags and v is not None}
    return data


def db_name(server: Server3 | Influx3StandIn, db: str) -> str:
    """The name `server` gives the role `db` (a bare stand-in: the role itself)."""
    return db if isinstance(server, Influx3StandIn) else server.name(db)
