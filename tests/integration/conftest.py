"""Fixtures for the integration tests: one real influxd for the session, a fresh database per
test, tierflow configs pointing at it, and a reader that gives back what a tier holds.

Everything here talks to the server through `ThrowawayInfluxd`'s own small HTTP client, never
through tierflow, so the tests' view of the data does not depend on the code under test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.influx3_standin import Influx3StandIn, ThreadedInflux3StandIn
from tierflow.testing import InfluxdError, ThrowawayInfluxd
from tierflow.testing.postgres import PostgresError, ThrowawayPostgres

if TYPE_CHECKING:
    from tests.integration._influx3_servers import Server3

# A point as a tier holds it: (measurement, time in ns, tags) → fields.
Key = tuple[str, int, frozenset[tuple[str, str]]]
Fields = dict[str, Any]
TierData = dict[Key, Fields]
ConfigWriter = Callable[..., Path]

WARM_RP = "warm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def influxd() -> Iterator[ThrowawayInfluxd]:
    """One throwaway influxd for the whole session; a missing binary fails, it never skips."""
    server = ThrowawayInfluxd()
    try:
        server.start()
    except InfluxdError as exc:
        pytest.fail(
            f"the integration tests need a working InfluxDB 1.x `influxd`: {exc}", pytrace=False
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One PostgreSQL for the session: $TIERFLOW_TEST_POSTGRES_URL's, else a throwaway server
    from Debian's binaries; tests make their own databases on it (`new_database`). A missing
    server fails, it never skips."""
    server = ThrowawayPostgres()
    try:
        server.start()
    except PostgresError as exc:
        pytest.fail(f"the PostgreSQL state tests need a PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: ThrowawayPostgres) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = postgres.new_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(autouse=True)
def _no_state_or_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # TIERFLOW_STATE overrides the config's state URL; a developer's shell must not redirect
    # the tests' state into their real state file.
    monkeypatch.delenv("TIERFLOW_STATE", raising=False)
    monkeypatch.delenv("TIERFLOW_CONFIG", raising=False)


@dataclass
class Databases:
    """Creates databases, each with a `warm` retention policy, and drops them afterwards."""

    server: ThrowawayInfluxd
    created: list[str] = field(default_factory=list)

    def new(self) -> str:
        return self.create(f"db_{uuid.uuid4().hex}")

    def create(self, name: str) -> str:
        self.server.execute(f'CREATE DATABASE "{name}"')
        self.server.execute(
            f'CREATE RETENTION POLICY "{WARM_RP}" ON "{name}" DURATION 400d REPLICATION 1'
        )
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        self.server.execute(f'DROP DATABASE "{name}"')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(name)


@pytest.fixture
def databases(influxd: ThrowawayInfluxd) -> Iterator[Databases]:
    """A factory of fresh databases, for tests that need several (or one per example)."""
    made = Databases(influxd)
    yield made
    made.drop_all()


@pytest.fixture
def db(databases: Databases) -> str:
    """This test's own fresh database, with a `warm` retention policy."""
    return databases.new()


# -- configs -----------------------------------------------------------------------------------


def toml_value(value: object) -> str:
    """A TOML literal for the few kinds of value a tierflow config holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string once non-ASCII stays as it is (TOML has no
        # surrogate-pair escapes) and DEL, which JSON leaves raw and TOML refuses, is escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }" if pairs else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


# A table's body: its keys and values, or (as `connection_toml()` gives one) its lines in TOML.
TableBody = Mapping[str, object] | Sequence[str]


def toml_document(tables: Mapping[str, TableBody]) -> str:
    """A TOML document of `tables`, in order: `{"jobs.down": {"every": "1h"}}` gives
    `[jobs.down]` and `every = "1h"`. A value of None leaves its key out."""
    lines: list[str] = []
    for name, body in tables.items():
        lines.append(f"[{name}]")
        if isinstance(body, Mapping):
            items = body.items()
            lines += [f"{key} = {toml_value(value)}" for key, value in items if value is not None]
        else:
            lines += body
        lines.append("")
    return "\n".join(lines)


def write_toml(directory: Path, tables: Mapping[str, TableBody]) -> Path:
    """`directory/tierflow.toml` holding `tables` (the directory is made if need be)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tierflow.toml"
    path.write_text(toml_document(tables), encoding="utf-8")
    return path


def sqlite_state(directory: Path) -> dict[str, object]:
    """The `[state]` table of a config whose state is `directory/state.db`."""
    return {"url": f"sqlite:///{directory / 'state.db'}"}


def config_tables(
    *,
    url: str,
    db: str,
    state: Path,
    jobs: Mapping[str, Mapping[str, object]],
) -> dict[str, TableBody]:
    """One 1.x connection `plant` to `url`, tiers `hot` and `warm` on `db`, and `jobs`
    (downsamples from hot to warm unless they say otherwise)."""
    tables: dict[str, TableBody] = {
        "state": {"url": f"sqlite:///{state}"},
        "connections.plant": {"kind": "influxdb1", "url": url, "timeout": "10s"},
        "tiers.hot": {"connection": "plant", "bucket": f"{db}/autogen"},
        "tiers.warm": {"connection": "plant", "bucket": f"{db}/{WARM_RP}"},
    }
    for name, job in jobs.items():
        tables[f"jobs.{name}"] = {"kind": "downsample", "source": "hot", "dest": "warm", **job}
    return tables


def config_text(
    *,
    url: str,
    db: str,
    state: Path,
    jobs: Mapping[str, Mapping[str, object]],
) -> str:
    return toml_document(config_tables(url=url, db=db, state=state, jobs=jobs))


@pytest.fixture
def write_config(influxd: ThrowawayInfluxd, tmp_path: Path) -> ConfigWriter:
    """`write_config(db, jobs, *, url=None, directory=tmp_path)` writes `tierflow.toml` for
    `db` on the session server (or `url`), with state in `<directory>/state.db`; returns it."""

    def write(
        db: str,
        jobs: Mapping[str, Mapping[str, object]],
        *,
        url: str | None = None,
        directory: Path | None = None,
    ) -> Path:
        where = directory or tmp_path
        state = where / "state.db"
        return write_toml(
            where, config_tables(url=url or influxd.url, db=db, state=state, jobs=jobs)
        )

    return write


# -- reading tiers back ------------------------------------------------------------------------


def read_tier(server: ThrowawayInfluxd, db: str, rp: str) -> TierData:
    """Every point of every measurement in `db`.`rp`, keyed by (measurement, time, tags).

    A regex FROM reads all measurements without quoting any name, so hostile names come back
    exactly as stored. GROUP BY * puts tags in each series' `tags`; a tag a series lacks comes
    back as "" (tag values are never empty in storage) and a field a row lacks as null: both
    are dropped.
    """
    data: TierData = {}
    q = f'SELECT * FROM "{db}"."{rp}"./.*/ GROUP BY *'
    for result in server.query(q, db=db, epoch="ns"):
        for series in result.get("series", []):
            tags = frozenset((k, v) for k, v in (series.get("tags") or {}).items() if v != "")
            columns = series["columns"]
            for row in series["values"]:
                values = dict(zip(columns, row, strict=True))
                key = (series["name"], int(values.pop("time")), tags)
                assert key not in data, f"two rows for one point {key}"
                data[key] = {k: v for k, v in values.items() if v is not None}
    return data


def field_types(server: ThrowawayInfluxd, db: str, rp: str, measurement: str) -> dict[str, str]:
    """SHOW FIELD KEYS of one measurement of one retention policy (this one is per-RP)."""
    name = measurement.replace("\\", "\\\\").replace('"', '\\"')
    (result,) = server.query(f'SHOW FIELD KEYS ON "{db}" FROM "{rp}"."{name}"', db=db)
    return {key: kind for series in result.get("series", []) for key, kind in series["values"]}


def hour_floor_days_ago(days: int) -> datetime:
    """A recent hour boundary: the warm RP (400d) refuses points older than its duration, so
    the data must be recent whatever the wall clock says; everything else uses explicit `now`s."""
    moment = datetime.now(UTC) - timedelta(days=days)
    return moment.replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def start() -> datetime:
    """A job start two days back: its windows are all in the past and well inside the warm RP's
    400 days."""
    return hour_floor_days_ago(2)


# -- the InfluxDB 3.x stand-in (DataFusion) -----------------------------------------------------


@pytest.fixture
async def influx3() -> AsyncIterator[Influx3StandIn]:
    """A fresh 3.x stand-in on the test's loop; its token is `tests.influx3_standin.TOKEN`."""
    async with Influx3StandIn() as server:
        yield server


@pytest.fixture
def influx3_threaded() -> Iterator[ThreadedInflux3StandIn]:
    """A fresh 3.x stand-in on its own thread, for tests that run tierflow in a subprocess."""
    with ThreadedInflux3StandIn() as server:
        yield server


@pytest.fixture(params=["standin", "live"])
async def influx3_server(request: pytest.FixtureRequest) -> AsyncIterator[Server3]:
    """A 3.x server to run tierflow against (`_influx3_servers.Server3`): a fresh stand-in, or
    the live server of `TIERFLOW_TEST_INFLUXDB3_URL`/`…_TOKEN` (skipped, saying so, without)."""
    from tests.integration._influx3_servers import StandIn3, live_influx3

    if request.param == "standin":
        async with Influx3StandIn() as server:
            yield StandIn3(server)
        return
    for live in live_influx3():
        yield live
