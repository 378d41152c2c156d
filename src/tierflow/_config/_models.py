"""The configuration's models: frozen, validated pydantic models of each table, and `Config`,
the whole. The cross-checks between tables are in `_checks`, loading in `_load`."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from tierflow._config._patterns import MeasurementPattern, parse_pattern
from tierflow._durations import format_duration, parse_duration
from tierflow._secrets import SecretSource
from tierflow._state._base import DEFAULT_KEEP_HISTORY
from tierflow._windows import CronSchedule, IntervalSchedule, Schedule

__all__ = [
    "AGGREGATES",
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_URL",
    "ArchiveJob",
    "CircuitConfig",
    "Config",
    "ConnectionConfig",
    "DownsampleJob",
    "InfluxDB1Connection",
    "InfluxDB2Connection",
    "InfluxDB3Connection",
    "JobConfig",
    "MeasurementPattern",
    "QueryJob",
    "RetryConfig",
    "SchedulerConfig",
    "ServerConfig",
    "StateConfig",
    "TierConfig",
]

DEFAULT_CONFIG = Path("tierflow.toml")
DEFAULT_STATE_URL = "sqlite:///tierflow-state.db"

# InfluxQL aggregate and selector functions a downsample job may ask for, by name.
AGGREGATES = frozenset(
    {"count", "first", "last", "max", "mean", "median", "min", "mode", "spread", "stddev", "sum"}
)
M = TypeVar("M", bound=BaseModel)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string such as '5m', got {value!r}")
    return parse_duration(value)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def _whole_seconds(value: timedelta) -> timedelta:
    if value % timedelta(seconds=1):
        raise ValueError("must be a whole number of seconds")
    return value


_DurationText = PlainSerializer(format_duration, return_type=str)
Duration = Annotated[timedelta, PlainValidator(_duration), _DurationText]
PositiveDuration = Annotated[
    timedelta, PlainValidator(_duration), AfterValidator(_positive), _DurationText
]
WindowDuration = Annotated[
    timedelta,
    PlainValidator(_duration),
    AfterValidator(_positive),
    AfterValidator(_whole_seconds),
    _DurationText,
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda moment: moment.astimezone(UTC))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SECRET_SHORTHANDS = {
    "env": "env",
    "file": "file",
    "command": "command",
    "vault": "vault",
    "aws_secret": "aws",
}


def _secret_shorthand(value: object) -> object:
    """TOML says `password = "x"` or `password = { env = "X" }`; give the union its `kind` tag."""
    if isinstance(value, str):
        return {"kind": "literal", "value": value}
    if isinstance(value, Mapping) and "kind" not in value:
        for key, kind in _SECRET_SHORTHANDS.items():
            if key in value:
                return {"kind": kind, **value}
    return value


class StateConfig(_Model):
    """Where the state lives: a SQLite file (one host) or a PostgreSQL database (several
    workers), and how long it keeps the attempt history. A PostgreSQL password comes from a
    secret source, never from the URL."""

    url: str = DEFAULT_STATE_URL
    password: SecretSource | None = None
    #: How long finished attempts stay in the history (failures, and attempts at windows not
    #: yet folded into a ledger range, stay longer).
    keep_history: PositiveDuration = DEFAULT_KEEP_HISTORY

    _shorthand = field_validator("password", mode="before")(_secret_shorthand)


class SchedulerConfig(_Model):
    """How much the scheduler may do at once, and how long a claim on a window lasts."""

    max_concurrency: int = Field(default=16, ge=1, le=1024)
    lease: PositiveDuration = timedelta(seconds=60)
    grace: Duration = timedelta(seconds=30)
    retry_delay: PositiveDuration = timedelta(seconds=5)
    max_retry_delay: PositiveDuration = timedelta(minutes=10)
    max_window_attempts: int = Field(default=10, ge=1, le=10_000)
    window_deadline: PositiveDuration = timedelta(minutes=10)


class ServerConfig(_Model):
    """Where the daemon serves its status page (`/`, `/api/status`), `/metrics`, `/healthz` and
    `/readyz`, and who may read them. On a loopback address anyone on the host may; on any other
    the page, the API and `/metrics` ask for `token` (a bearer token from a secret source),
    unless `public = true` says they are meant to be open. The probes stay open either way."""

    listen: str = Field(pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
    token: SecretSource | None = None
    public: bool = False

    _shorthand = field_validator("token", mode="before")(_secret_shorthand)

    @model_validator(mode="after")
    def _guarded(self) -> ServerConfig:
        if self.token is not None and self.public:
            raise ValueError("give either 'token' or 'public = true', not both")
        if self.token is None and not self.public and not self.loopback:
            raise ValueError(
                f"listen = {self.listen!r} is reachable from other hosts: set "
                'token = { env = "..." } (or { file = ... }, { command = [...] }) so the status '
                "page, /api/status and /metrics ask for it, or public = true to serve them to "
                "anyone who can connect"
            )
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def loopback(self) -> bool:
        """Whether `listen` is a loopback address (127.0.0.0/8, ::1, localhost): only this
        host can connect."""
        host = self.host_port[0]
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to any address


class RetryConfig(_Model):
    """Retries of transient failures: exponential backoff with full jitter, within a deadline."""

    attempts: int = Field(default=6, ge=1, le=100)
    initial: PositiveDuration = timedelta(milliseconds=500)
    max: PositiveDuration = timedelta(seconds=20)
    deadline: PositiveDuration = timedelta(seconds=60)


class CircuitConfig(_Model):
    """After `failures` transient failures in a row the circuit opens: calls fail fast for
    `cooldown`, then one probe (the health check) decides whether it closes."""

    failures: int = Field(default=3, ge=1, le=1000)
    cooldown: PositiveDuration = timedelta(seconds=30)


class _Connection(_Model):
    """What every connection kind shares: limits, timeouts, retries, the circuit breaker."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/.*)?$")
    timeout: PositiveDuration = timedelta(seconds=15)
    connect_timeout: PositiveDuration = timedelta(seconds=5)
    gzip: bool = True
    max_concurrency: int = Field(default=4, ge=1, le=256)
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()


class InfluxDB1Connection(_Connection):
    """An InfluxDB 1.x server, spoken to in InfluxQL over HTTP."""

    kind: Literal["influxdb1"]
    username: str | None = None
    password: SecretSource | None = None

    _shorthand = field_validator("password", mode="before")(_secret_shorthand)


class InfluxDB2Connection(_Connection):
    """An InfluxDB 2.x server (OSS or Cloud), spoken to in Flux over its HTTP API.

    One org per connection: every request is scoped to it. The client's timeout is a total one
    that covers the whole response body, and a downsample's response streams back every row it
    wrote, so the default is longer than the 1.x one.
    """

    kind: Literal["influxdb2"]
    org: str = Field(min_length=1)
    token: SecretSource
    timeout: PositiveDuration = timedelta(seconds=60)
    verify_tls: bool = True
    ca_cert: Path | None = None

    _shorthand = field_validator("token", mode="before")(_secret_shorthand)


class InfluxDB3Connection(_Connection):
    """An InfluxDB 3 server (Core, Enterprise, Cloud), spoken to in SQL over its HTTP API
    (`/api/v3/query_sql`, `/api/v3/write_lp`), with a bearer token.

    3.x has no orgs and no retention policies: a tier on it names a database (`bucket =
    "<database>"`) and a table is a measurement. `database`, when set, is the connection's
    scope (as a 2.x org is: jobs across scopes need `allow_cross_org`) and where a query that
    names no database runs; leave it unset for a token that serves several databases (a hot
    and a warm one). A downsample's read brings back every aggregated row before tierflow
    writes it, so the default timeout is the 2.x one.
    """

    kind: Literal["influxdb3"]
    token: SecretSource
    database: str | None = Field(default=None, min_length=1)
    timeout: PositiveDuration = timedelta(seconds=60)
    verify_tls: bool = True
    ca_cert: Path | None = None

    _shorthand = field_validator("token", mode="before")(_secret_shorthand)


ConnectionConfig = InfluxDB1Connection | InfluxDB2Connection | InfluxDB3Connection


class TierConfig(_Model):
    """A place data lives: a bucket (1.x: `database/retention_policy`) on a connection, or, for
    a cold tier, an `archive` URL (`file:///path`, a plain path, or `s3://bucket/prefix`)."""

    connection: str = ""
    bucket: str = ""
    archive: str | None = Field(default=None, min_length=1)
    retention: PositiveDuration | None = None
    shard_duration: PositiveDuration | None = None
    #: How long before its data expires a window still waiting counts as at risk (default:
    #: a tenth of `retention`, at least an hour).
    expiry_margin: PositiveDuration | None = None

    @model_validator(mode="after")
    def _live_or_archive(self) -> TierConfig:
        # A live tier without connection or bucket is reported per key by `_check_references`.
        if self.archive is not None and (self.connection or self.bucket):
            raise ValueError("a cold tier has 'archive' only, not 'connection' or 'bucket'")
        return self

    @property
    def is_archive(self) -> bool:
        return self.archive is not None

    @property
    def database(self) -> str:
        return self.bucket.split("/", 1)[0]

    @property
    def retention_policy(self) -> str | None:
        """The 1.x retention policy, or None for the database's default one."""
        _, _, policy = self.bucket.partition("/")
        return policy or None


class _Job(_Model):
    """What every job kind shares: tiers, schedule, catch-up, and `replace`."""

    source: str
    dest: str
    every: WindowDuration | None = None
    cron: str | None = None
    offset: Duration = timedelta(0)
    start: UtcDatetime
    into: str | None = Field(default=None, min_length=1)
    catchup_chunk: WindowDuration | None = None
    max_catchup: PositiveDuration | None = None
    parallel_windows: int = Field(default=1, ge=1, le=64)
    recheck: PositiveDuration | None = None
    #: Delete the dest window before writing it again (2.x only), for sources whose series can
    #: vanish: a plain re-run overwrites the series it writes but leaves the ones it no longer does.
    replace: bool = False
    #: Allow the source and dest tiers to live in different orgs (2.x).
    allow_cross_org: bool = False
    measurements: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    #: `measurements = "*"` or `"/regex/"` as written (jobs of a kind that takes one): the
    #: measurements are then resolved per window at run time (`tierflow._wildcards`), and
    #: `measurements` holds those of one window only once resolved.
    measurement_pattern: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    #: Why this kind of job takes no pattern (None: it takes one).
    _no_pattern: ClassVar[str | None] = (
        "only archive jobs take a measurement pattern; list the measurements"
    )

    @model_validator(mode="before")
    @classmethod
    def _pattern_from_measurements(cls, data: Any) -> Any:
        # A valid pattern moves to `measurement_pattern`; anything else stays for the
        # `measurements` validator to refuse under the key the user wrote.
        if isinstance(data, Mapping):
            data = dict(data)
            if "measurement_pattern" in data:
                data["measurement_pattern"] = _NotAKey(data["measurement_pattern"])
                return data
            if cls._no_pattern is None:
                # Absent, it is refused by the kind's own check, under its key.
                data.setdefault("measurements", [])
            value = data.get("measurements")
            if isinstance(value, str) and cls._no_pattern is None:
                try:
                    parse_pattern(value)
                except ValueError:
                    return data
                data["measurement_pattern"] = _Written(data.pop("measurements"))
        return data

    @field_validator("measurements", mode="before")
    @classmethod
    def _pattern_refused(cls, value: object) -> object:
        if isinstance(value, str):
            if cls._no_pattern is not None:
                raise ValueError(f"{value!r}: {cls._no_pattern}")
            parse_pattern(value)  # raises the reason
        return value

    @field_validator("measurement_pattern", mode="before")
    @classmethod
    def _written_as_measurements(cls, value: object) -> object:
        if isinstance(value, _NotAKey):
            raise ValueError('not a key: write the pattern as measurements = "*" or "/regex/"')
        return str(value) if isinstance(value, _Written) else value

    @property
    def pattern(self) -> MeasurementPattern | None:
        """The measurement pattern, or None when the measurements are listed."""
        if self.measurement_pattern is None:
            return None
        return parse_pattern(self.measurement_pattern)

    def dest_measurement(self, measurement: str) -> str:
        """Where a measurement's aggregates go: the same name, or the `into` template (e.g.
        `"{{ measurement }}_5m"`) rendered for it."""
        return measurement if self.into is None else _render_into(self.into, measurement)

    @field_validator("offset")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            CronSchedule(value)
        return value

    @property
    def schedule(self) -> Schedule:
        if self.cron is not None:
            return CronSchedule(self.cron)
        assert self.every is not None, "validated at load: exactly one of every and cron"
        return IntervalSchedule(self.every)

    @property
    def chunk(self) -> timedelta:
        """The longest span one coalesced catch-up query may cover."""
        if self.catchup_chunk is not None:
            return self.catchup_chunk
        return max(timedelta(hours=1), self.every or timedelta(0))


class DownsampleJob(_Job):
    """Aggregate source measurements into the dest tier: one point per window and series."""

    kind: Literal["downsample"]
    _no_pattern: ClassVar[str | None] = (
        "a downsample job lists its measurements: its aggregates name fields of those, its "
        "outputs must be known before it runs (overlap, field-type and recheck checks), and "
        "a pattern could pick up its own outputs"
    )
    measurements: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    aggregates: dict[str, tuple[str, ...]] = Field(min_length=1)

    @field_validator("aggregates")
    @classmethod
    def _known_aggregates(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for field, functions in value.items():
            if not functions:
                raise ValueError(f"field {field!r} lists no aggregate")
            unknown = sorted(set(functions) - AGGREGATES)
            if unknown:
                raise ValueError(
                    f"unknown aggregate {unknown[0]!r} for field {field!r}; "
                    f"known: {', '.join(sorted(AGGREGATES))}"
                )
        return value


class QueryJob(_Job):
    """Run a user's own Jinja2 template (Flux for 2.x sources, InfluxQL for 1.x) per window.

    `template` is relative to the config file. `params` reach the template as `params`; like
    every other value they must pass a quoting filter to reach the query. `measurements` (and
    `into`) are optional: the template sees them as `source.measurements`/`dest.measurements`,
    and `replace` needs them to know what to delete.
    """

    kind: Literal["query"]
    template: Path
    _no_pattern: ClassVar[str | None] = (
        "a query job's template decides what it reads and writes; list the measurements it "
        "should see as source.measurements"
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("recheck")
    @classmethod
    def _no_recheck(cls, value: timedelta | None) -> timedelta | None:
        if value is not None:
            raise ValueError(
                "query jobs cannot recheck: late data is found by a fingerprint of the source "
                "that only downsample jobs define"
            )
        return value

    @property
    def chunk(self) -> timedelta:
        """A user template need not aggregate per window, so catch-up does not coalesce unless
        `catchup_chunk` says the template is written for it (`window.every` inside a range)."""
        return self.catchup_chunk if self.catchup_chunk is not None else timedelta(0)


class ArchiveJob(_Job):
    """Copy each window of the source measurements, point for point, into a cold tier's Parquet
    archive (before the source's retention expires it)."""

    kind: Literal["archive"]
    _no_pattern: ClassVar[str | None] = None

    @field_validator("measurements")
    @classmethod
    def _some_measurements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Not reached for a pattern: it left `measurements` (see `_pattern_from_measurements`).
        if not value:
            raise ValueError(
                'archive jobs need measurements: a list, "*" for every measurement of the '
                'source tier, or a regex such as "/^cpu_/"'
            )
        return value

    @field_validator("recheck", "into")
    @classmethod
    def _not_for_archives(cls, value: object) -> object:
        if value is not None:
            raise ValueError("archive jobs copy points as they are: no recheck, no into")
        return value

    @property
    def chunk(self) -> timedelta:
        """Each window is its own set of files, so catch-up runs window by window."""
        return timedelta(0)


JobConfig = DownsampleJob | QueryJob | ArchiveJob


class _Written(str):
    """A pattern moved from `measurements`, where the user wrote it."""


class _NotAKey(str):
    """A `measurement_pattern` the user wrote: not a config key."""


@cache
def _into_environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


# Every batch's query names its dest measurements: compiling the template once, not per batch.
@lru_cache(maxsize=1024)
def _render_into(template: str, measurement: str) -> str:
    try:
        name = _into_environment().from_string(template).render(measurement=measurement)
    except jinja2.TemplateError as exc:
        raise ValueError(f"'into' template {template!r}: {exc}") from None
    if not name.strip():
        raise ValueError(f"'into' template {template!r} renders empty for {measurement!r}")
    return name


_CONNECTION_KINDS: dict[
    str, type[InfluxDB1Connection] | type[InfluxDB2Connection] | type[InfluxDB3Connection]
] = {
    "influxdb1": InfluxDB1Connection,
    "influxdb2": InfluxDB2Connection,
    "influxdb3": InfluxDB3Connection,
}
_JOB_KINDS: dict[str, type[DownsampleJob] | type[QueryJob] | type[ArchiveJob]] = {
    "archive": ArchiveJob,
    "downsample": DownsampleJob,
    "query": QueryJob,
}


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, cross-checked configuration."""

    path: Path
    state: StateConfig
    connections: Mapping[str, ConnectionConfig]
    tiers: Mapping[str, TierConfig]
    jobs: Mapping[str, JobConfig]
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    server: ServerConfig | None = None

    def connection_of(self, tier: str) -> ConnectionConfig:
        return self.connections[self.tiers[tier].connection]

    def template_path(self, job: QueryJob) -> Path:
        """A query job's template file: as written if absolute, else beside the config file."""
        return job.template if job.template.is_absolute() else self.path.parent / job.template

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | str | None = None) -> Config:
        """A config from a mapping shaped like the TOML file (`{"jobs": {"cpu_5m": {...}}}`),
        validated the same way; ConfigError names each key path at fault. Relative paths
        (templates, archives, a SQLite state file) are taken from `base_dir` (default: the
        working directory); messages call the mapping `<mapping>`."""
        # Imported here: loading builds on these models.
        from tierflow._config._load import parse_config

        return parse_config(data, Path(base_dir if base_dir is not None else ".") / "<mapping>")
