"""The declarative configuration: frozen, validated models loaded from TOML.

Raw dicts never travel past `load_config`. Every problem is reported at once, each naming the file,
the table, the key and the offending value, so that one edit fixes them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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
    ValidationError,
    field_validator,
    model_validator,
)

from tierflow._durations import format_duration, parse_duration
from tierflow._errors import ConfigError
from tierflow._secrets import LiteralSecret, SecretSource
from tierflow._url_checks import (
    credential_problems,
    redact_url,
    resolve_state_url,
    state_left_behind,
    state_url_problem,
)
from tierflow._windows import CronSchedule, IntervalSchedule, Schedule

__all__ = [
    "AGGREGATES",
    "ArchiveJob",
    "CircuitConfig",
    "Config",
    "ConnectionConfig",
    "DownsampleJob",
    "InfluxDB1Connection",
    "InfluxDB2Connection",
    "JobConfig",
    "QueryJob",
    "RetryConfig",
    "SchedulerConfig",
    "ServerConfig",
    "StateConfig",
    "TierConfig",
    "load_config",
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
    url: str = DEFAULT_STATE_URL


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
    """Where the daemon serves /metrics, /healthz and /readyz."""

    listen: str = Field(pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


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
    """An InfluxDB 2.x server (OSS or Cloud), spoken to in Flux through `influxdb-client`.

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


ConnectionConfig = InfluxDB1Connection | InfluxDB2Connection


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
    tags: dict[str, str] = Field(default_factory=dict)

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
    measurements: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)

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


@cache
def _into_environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def _render_into(template: str, measurement: str) -> str:
    try:
        name = _into_environment().from_string(template).render(measurement=measurement)
    except jinja2.TemplateError as exc:
        raise ValueError(f"'into' template {template!r}: {exc}") from None
    if not name.strip():
        raise ValueError(f"'into' template {template!r} renders empty for {measurement!r}")
    return name


_CONNECTION_KINDS: dict[str, type[InfluxDB1Connection] | type[InfluxDB2Connection]] = {
    "influxdb1": InfluxDB1Connection,
    "influxdb2": InfluxDB2Connection,
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


@dataclass(frozen=True, slots=True)
class _Problem:
    table: str
    key: str | None
    value: object
    message: str

    def render(self, path: Path) -> str:
        where = f"[{self.table}]" if self.table else "top level"
        key = f" {self.key}" if self.key else ""
        shown = "" if self.value is _MISSING else f" = {_show(self.value)}"
        return f"{path}: {where}{key}{shown}: {self.message}"


_MISSING = object()
_SECTIONS = frozenset({"state", "scheduler", "server", "connections", "tiers", "jobs"})
_SECRET_KEYS = frozenset({"password", "token", "value"})


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{redact_url(value)}"'
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


def _table_name(*parts: str) -> str:
    return ".".join(part if _NAME.fullmatch(part) else f'"{part}"' for part in parts)


def load_config(path: Path | str | None = None) -> Config:
    """Read, validate and cross-check a TOML config; raise ConfigError listing every problem."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: Mapping[str, Any], path: Path) -> Config:
    """Validate an already-parsed TOML document (see `load_config`)."""
    problems = [
        _Problem(
            "", key, _MISSING, "unknown top-level table or key" + _did_you_mean(key, _SECTIONS)
        )
        for key in sorted(set(raw) - _SECTIONS)
    ]

    state = _validate(StateConfig, raw.get("state", {}), ("state",), problems)
    scheduler = _validate(SchedulerConfig, raw.get("scheduler", {}), ("scheduler",), problems)
    server = (
        _validate(ServerConfig, raw["server"], ("server",), problems) if "server" in raw else None
    )
    state = _resolved_state(state, path, problems)
    connections = _validate_named(raw, "connections", _CONNECTION_KINDS, problems)
    tiers = {
        name: tier
        for name, body in _named_tables(raw, "tiers", problems)
        if (tier := _validate(TierConfig, body, ("tiers", name), problems)) is not None
    }
    jobs = _validate_named(raw, "jobs", _JOB_KINDS, problems)

    declared = _Declared(_names(raw, "connections"), _names(raw, "tiers"))
    problems.extend(_check_references(raw, declared))
    problems.extend(_check_url_credentials(raw))
    problems.extend(_cross_check(tiers, jobs, connections))
    problems.extend(_check_job_kinds(path, connections, tiers, jobs))
    from tierflow._overlap import check_overlaps  # it builds on this module's models

    problems.extend(check_overlaps(tiers, jobs, connections))
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problem(s) in the config\n"
            + "\n".join("  " + p.render(path) for p in problems)
        )
    _warn_literal_secrets(connections, path)
    return Config(
        path,
        state or StateConfig(),
        connections,
        tiers,
        jobs,
        scheduler or SchedulerConfig(),
        server,
    )


def _resolved_state(
    state: StateConfig | None, path: Path, problems: list[_Problem]
) -> StateConfig | None:
    """The state URL, with `TIERFLOW_STATE` over the file's, its relative SQLite path anchored:
    the file's against the file's directory (like templates and archives), the environment's
    against the working directory (where the user typing it stands)."""
    if url := os.environ.get("TIERFLOW_STATE"):
        if problem := state_url_problem(url):
            problems.append(_Problem("state", "url", _MISSING, f"from TIERFLOW_STATE: {problem}"))
        return StateConfig(url=resolve_state_url(url, Path.cwd()))
    if state is None:
        return None
    resolved = StateConfig(url=resolve_state_url(state.url, path.absolute().parent))
    if problem := state_left_behind(state.url, resolved.url):
        problems.append(_Problem("state", "url", state.url, problem))
    return resolved


def _check_url_credentials(raw: Mapping[str, Any]) -> list[_Problem]:
    """URLs that hold credentials, named by table and key and never shown."""
    return [
        _Problem(_table_name(*table), key, _MISSING, message)
        for table, key, message in credential_problems(raw)
    ]


def _named_tables(
    raw: Mapping[str, Any], section: str, problems: list[_Problem]
) -> Iterable[tuple[str, Mapping[str, Any]]]:
    tables = raw.get(section, {})
    if not isinstance(tables, Mapping):
        problems.append(_Problem("", section, tables, "must be a table of named tables"))
        return
    for name, body in tables.items():
        if not isinstance(body, Mapping):
            problems.append(_Problem(section, name, body, "must be a table"))
        elif not _NAME.fullmatch(name):
            problems.append(
                _Problem(
                    _table_name(section, name),
                    None,
                    _MISSING,
                    "names may hold letters, digits, '_' and '-' and start with a letter",
                )
            )
        else:
            yield name, body


def _validate_named(
    raw: Mapping[str, Any], section: str, kinds: Mapping[str, type[M]], problems: list[_Problem]
) -> dict[str, M]:
    valid: dict[str, M] = {}
    for name, body in _named_tables(raw, section, problems):
        table = _table_name(section, name)
        kind = body.get("kind")
        model = kinds.get(kind) if isinstance(kind, str) else None
        if model is None:
            value = _MISSING if kind is None else kind
            message = "missing" if kind is None else "unknown kind"
            problems.append(
                _Problem(table, "kind", value, f"{message}; expected one of: {', '.join(kinds)}")
            )
            continue
        if (item := _validate(model, body, (section, name), problems)) is not None:
            valid[name] = item
    return valid


def _validate(
    model: type[M], body: object, table: tuple[str, ...], problems: list[_Problem]
) -> M | None:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems.extend(_from_pydantic(table, body, error, model) for error in exc.errors())
        return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_pydantic(
    table: tuple[str, ...], body: object, error: Any, model: type[BaseModel]
) -> _Problem:
    loc = [str(part) for part in error["loc"]]
    # Discriminated secret unions add the tag to the location; it is not a key the user wrote.
    loc = [part for part in loc if part not in {*_SECRET_SHORTHANDS.values(), "literal"}] or loc
    key = ".".join(loc) if loc else None
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        if len(loc) == 1:
            keys = (info.alias or name for name, info in model.model_fields.items())
            message += _did_you_mean(loc[0], keys)
    elif error["type"] == "missing":
        message = "required key is missing"
        return _Problem(_table_name(*table), key, _MISSING, message)
    value: object = error.get("input", _MISSING) if loc else _MISSING
    if any(part in _SECRET_KEYS for part in loc):
        value = "<redacted>"
    return _Problem(_table_name(*table), key, value, message)


@dataclass(frozen=True, slots=True)
class _Declared:
    """Names declared in the file, valid or not, so one bad table does not cascade into many."""

    connections: frozenset[str]
    tiers: frozenset[str]


def _names(raw: Mapping[str, Any], section: str) -> frozenset[str]:
    tables = raw.get(section, {})
    return frozenset(tables) if isinstance(tables, Mapping) else frozenset()


def _check_references(raw: Mapping[str, Any], declared: _Declared) -> list[_Problem]:
    """Checks that need only the raw tables, so they run even where a table failed validation
    (one edit should fix every problem, not reveal the next)."""
    problems: list[_Problem] = []
    for name, body in _named_tables(raw, "tiers", []):
        if "archive" not in body:
            problems.extend(
                _Problem(
                    _table_name("tiers", name),
                    key,
                    _MISSING,
                    "required key is missing",
                )
                for key in ("connection", "bucket")
                if key not in body
            )
        connection = body.get("connection")
        if isinstance(connection, str) and connection not in declared.connections:
            problems.append(
                _Problem(
                    _table_name("tiers", name),
                    "connection",
                    connection,
                    f"no such connection; defined: {_listing(declared.connections)}",
                )
            )
    for name, body in _named_tables(raw, "jobs", []):
        table = _table_name("jobs", name)
        for key in ("source", "dest"):
            tier = body.get(key)
            if isinstance(tier, str) and tier not in declared.tiers:
                problems.append(
                    _Problem(table, key, tier, f"no such tier; defined: {_listing(declared.tiers)}")
                )
        if body.get("kind") in _JOB_KINDS and ("every" in body) == ("cron" in body):
            key = "cron" if "every" in body else "every"
            value = body.get(key, _MISSING)
            problems.append(_Problem(table, key, value, "set exactly one of 'every' and 'cron'"))
    return problems


def _cross_check(
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
    connections: Mapping[str, ConnectionConfig],
) -> list[_Problem]:
    """Checks across valid tables."""
    problems: list[_Problem] = []
    for name, job in jobs.items():
        table = _table_name("jobs", name)
        if job.source in tiers and job.dest in tiers:
            archive_problems = _check_archive_tiers(table, job, tiers)
            if archive_problems or isinstance(job, ArchiveJob):
                problems.extend(archive_problems)
                continue
        try:
            for measurement in job.measurements:
                job.dest_measurement(measurement)
        except ValueError as exc:
            problems.append(_Problem(table, "into", job.into, str(exc)))
            continue
        if job.source in tiers and job.dest in tiers:
            source, dest = tiers[job.source], tiers[job.dest]
            if problem := _cross_org(table, job, source, dest, connections):
                problems.append(problem)
            elif source.connection != dest.connection and not isinstance(job, DownsampleJob):
                problems.append(
                    _Problem(
                        table,
                        "dest",
                        job.dest,
                        f"{job.kind} jobs run on one server: source and dest tiers must share a "
                        "connection (downsample jobs may cross connections: tierflow carries "
                        "their rows)",
                    )
                )
            if source.bucket == dest.bucket and any(
                job.dest_measurement(m) == m for m in job.measurements
            ):
                problems.append(
                    _Problem(
                        table,
                        "dest",
                        job.dest,
                        "dest is the source bucket and the output measurement is the source "
                        "one: set 'into' to write to another measurement",
                    )
                )
    return problems


def _check_archive_tiers(
    table: str, job: JobConfig, tiers: Mapping[str, TierConfig]
) -> list[_Problem]:
    """Archive jobs read a live tier and write a cold one; no other job touches cold tiers."""
    source, dest = tiers[job.source], tiers[job.dest]
    if not isinstance(job, ArchiveJob):
        return [
            _Problem(table, key, getattr(job, key), f"{job.kind} jobs cannot use a cold tier")
            for key, tier in (("source", source), ("dest", dest))
            if tier.is_archive
        ]
    problems = []
    if source.is_archive:
        problems.append(
            _Problem(table, "source", job.source, "must be a live tier, not a cold one")
        )
    if not dest.is_archive:
        problems.append(
            _Problem(table, "dest", job.dest, "must be a cold tier (one with 'archive = ...')")
        )
    return problems


def _org(tier: TierConfig, connections: Mapping[str, ConnectionConfig]) -> str | None:
    from tierflow._engines import dialect_for

    connection = connections.get(tier.connection)
    return dialect_for(connection).scope(connection) if connection is not None else None


def _cross_org(
    table: str,
    job: JobConfig,
    source: TierConfig,
    dest: TierConfig,
    connections: Mapping[str, ConnectionConfig],
) -> _Problem | None:
    """A job reading one org and writing another is refused unless it says so: tokens are often
    all-access within an org, and a typo in a tier should not move data between tenants."""
    orgs = _org(source, connections), _org(dest, connections)
    if None in orgs or orgs[0] == orgs[1] or job.allow_cross_org:
        return None
    return _Problem(
        table,
        "dest",
        job.dest,
        f"source tier {job.source!r} is in org {orgs[0]!r} and dest tier {job.dest!r} in org "
        f"{orgs[1]!r}; set allow_cross_org = true if the job is meant to cross orgs",
    )


def _check_job_kinds(
    path: Path,
    connections: Mapping[str, ConnectionConfig],
    tiers: Mapping[str, TierConfig],
    jobs: Mapping[str, JobConfig],
) -> list[_Problem]:
    """What a job may ask of the engines it uses, by their declared capabilities (`replace`
    deletes on the dest; aggregates run on the source; templates are the source's dialect)."""
    from tierflow._engines import dialect_for

    problems: list[_Problem] = []
    for name, job in jobs.items():
        table = _table_name("jobs", name)
        tier = tiers.get(job.source)
        connection = connections.get(tier.connection) if tier else None
        dest_tier = tiers.get(job.dest)
        dest = connections.get(dest_tier.connection) if dest_tier else None
        can = dialect_for(dest).capabilities if dest is not None else None
        if job.replace and can is not None and not can.delete_window:
            problems.append(_Problem(table, "replace", True, can.why_not["delete_window"]))
        if job.replace and not job.measurements:
            problems.append(
                _Problem(
                    table,
                    "replace",
                    True,
                    "needs 'measurements': they name what to delete from the dest window",
                )
            )
        if isinstance(job, QueryJob):
            problems.extend(_check_template_file(path, table, job, connection))
        elif isinstance(job, DownsampleJob) and connection is not None:
            source = dialect_for(connection).capabilities
            problems.extend(
                _Problem(table, f"aggregates.{field}", list(functions), source.why_not[function])
                for field, functions in job.aggregates.items()
                for function in functions
                if function not in source.aggregates
            )
    return problems


def _check_template_file(
    path: Path, table: str, job: QueryJob, connection: ConnectionConfig | None
) -> list[_Problem]:
    from tierflow._engines import dialect_for

    where = job.template if job.template.is_absolute() else path.parent / job.template
    if not where.is_file():
        return [_Problem(table, "template", str(job.template), f"no such file: {where}")]
    if connection is None:
        return []
    suffix = dialect_for(connection).template_suffix
    if not where.name.endswith(suffix):
        return [
            _Problem(
                table,
                "template",
                str(job.template),
                f"the source connection is {connection.kind}: its templates end in {suffix}",
            )
        ]
    return []


def _listing(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return listed or "none"


def _warn_literal_secrets(connections: Mapping[str, ConnectionConfig], path: Path) -> None:
    from tierflow._engines import dialect_for

    for name, connection in connections.items():
        key, secret = dialect_for(connection).secret(connection)
        if isinstance(secret, LiteralSecret):
            warnings.warn(
                f"{path}: [connections.{name}] {key} is written into the config; "
                "prefer { env = ... }, { file = ... } or { command = [...] }",
                stacklevel=3,
            )
