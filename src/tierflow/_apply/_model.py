"""What `tierflow apply` reads, plans and sends: the plain data its planner, checks and
admin calls pass between them, and the durations as InfluxDB prints and reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from tierflow._durations import format_duration
from tierflow._errors import ApplyError, ApplyRefusedError
from tierflow._lineprotocol import ns_isoformat
from tierflow._windows import isoformat

__all__ = [
    "AUTOGEN",
    "MIN_RETENTION",
    "Action",
    "ApplyError",
    "ApplyRefusedError",
    "Bucket",
    "BucketPlace",
    "Change",
    "CreateBucket",
    "Directory",
    "Expiring",
    "MakeDirectory",
    "Observed",
    "Policy",
    "PolicyPlace",
    "Shrink",
    "Statement",
    "Step",
    "UpdateBucket",
    "parse_go_duration",
    "show",
]

#: The shortest retention (and, on 1.x, shard duration) InfluxDB accepts: 1.x refuses a shorter
#: policy ("retention policy duration must be at least 1h0m0s", seen on 1.6.7) and raises a
#: shorter shard duration to 1h on its own; the 2.x docs give the same minimum for buckets.
MIN_RETENTION = timedelta(hours=1)
AUTOGEN = "autogen"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    #: An update that shortens a retention holding data older than the new one: the server
    #: deletes that data. Only with `allow_shrink`.
    SHRINK = "shrink"
    NONE = "none"


# -- what apply sends ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """An InfluxQL statement for a 1.x connection; database creations are sent first."""

    connection: str
    text: str
    creates_database: bool = False


@dataclass(frozen=True, slots=True)
class CreateBucket:
    connection: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateBucket:
    connection: str
    bucket_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    path: Path


Step = Statement | CreateBucket | UpdateBucket | MakeDirectory


@dataclass(frozen=True, slots=True)
class PolicyPlace:
    """A 1.x retention policy, where a shrinking retention's data lives."""

    connection: str
    database: str
    policy: str

    def __str__(self) -> str:
        return f'retention policy "{self.database}"."{self.policy}"'


@dataclass(frozen=True, slots=True)
class BucketPlace:
    """A 2.x bucket (in its connection's org), where a shrinking retention's data lives."""

    connection: str
    bucket: str

    def __str__(self) -> str:
        return f'bucket "{self.bucket}"'


@dataclass(frozen=True, slots=True)
class Shrink:
    """A retention about to get shorter (`old` None: it was infinite), for the data in `place`:
    data older than `new` will be deleted by the server, and jobs reading `tiers` must not
    need it."""

    tiers: tuple[str, ...]
    old: timedelta | None
    new: timedelta
    place: PolicyPlace | BucketPlace


@dataclass(frozen=True, slots=True)
class Expiring:
    """What the server would delete once a shrunk retention applies: the field values older
    than `cutoff` (now − the new retention), `count` of them; the oldest at `oldest` (ns since
    the epoch) in `measurement`. `count` 0: nothing older (an ordinary update)."""

    place: PolicyPlace | BucketPlace
    cutoff: datetime
    count: int = 0
    oldest: int | None = None
    measurement: str | None = None

    def __str__(self) -> str:
        if not self.count:
            return f"no data older than {isoformat(self.cutoff)}"
        oldest = "" if self.oldest is None else f", the oldest at {ns_isoformat(self.oldest)}"
        if self.measurement is not None:
            oldest += f" in measurement {self.measurement!r}"
        return f"{self.count} field value(s) older than {isoformat(self.cutoff)}{oldest}"


@dataclass(frozen=True, slots=True)
class Change:
    """What apply does (or would do) for one tier. Tiers that share a policy or bucket each get
    a change; the first of them in the config carries the steps."""

    tier: str
    action: Action
    detail: str
    steps: tuple[Step, ...] = ()
    shrink: Shrink | None = None

    def as_json(self) -> dict[str, str]:
        return {"tier": self.tier, "action": self.action.value, "detail": self.detail}


# -- what the servers hold -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """A 1.x retention policy as `SHOW RETENTION POLICIES` reports it (`duration` None:
    infinite)."""

    name: str
    duration: timedelta | None
    shard: timedelta
    default: bool


@dataclass(frozen=True, slots=True)
class Bucket:
    """A 2.x bucket's ID and retention rule (None: infinite, or no shard group duration)."""

    id: str
    retention: timedelta | None
    shard: timedelta | None


@dataclass(frozen=True, slots=True)
class Directory:
    """A cold tier's archive location: `path` None for an object store."""

    url: str
    path: Path | None
    exists: bool = False
    problem: str | None = None


@dataclass
class Observed:
    """What the servers and the filesystem hold, as far as the declared tiers go. A database or
    bucket mapped to None is missing; an org mapped to None is unknown to its server."""

    databases: dict[tuple[str, str], dict[str, Policy] | None] = field(default_factory=dict)
    orgs: dict[str, str | None] = field(default_factory=dict)
    buckets: dict[tuple[str, str], Bucket | None] = field(default_factory=dict)
    directories: dict[str, Directory] = field(default_factory=dict)


# -- durations ------------------------------------------------------------------------------------

_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_GO_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+")
_GO_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str) -> timedelta | None:
    """A duration as InfluxDB 1.x prints it (Go's `time.Duration`: `720h0m0s`, `1h30m0s`,
    `500ms`); None for `0s`, which `SHOW RETENTION POLICIES` prints for an infinite policy."""
    if not _GO_WHOLE.fullmatch(text):
        raise ValueError(f"not a Go duration: {text!r}")
    nanos = sum(Decimal(number) * _GO_NANOS[unit] for number, unit in _GO_PART.findall(text))
    return timedelta(microseconds=int(nanos / 1000)) if nanos else None


_UNITS = (
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
)


def show(duration: timedelta | None) -> str:
    """`30d` rather than `4w2d`: the largest unit up to days that divides the duration, as
    people write it in configs (InfluxQL reads it the same way); `infinite` for None."""
    if duration is None:
        return "infinite"
    for unit, size in _UNITS:
        if duration >= size and not duration % size:
            return f"{duration // size}{unit}"
    return format_duration(duration)
