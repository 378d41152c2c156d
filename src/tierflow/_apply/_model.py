"""What `tierflow apply` reads, plans and sends: the plain data its planner, checks and the
dialects' admin calls pass between them, whatever the server. What a dialect reads and sends
(1.x retention policies and statements, 2.x buckets) is its own, in its engine package; here
it is seen through `Place` and `ServerStep`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from tierflow._config import ConnectionConfig, TierConfig
from tierflow._durations import format_duration
from tierflow._errors import ApplyError, ApplyRefusedError
from tierflow._lineprotocol import ns_isoformat
from tierflow._windows import isoformat

__all__ = [
    "MIN_RETENTION",
    "Action",
    "ApplyError",
    "ApplyRefusedError",
    "Change",
    "Directory",
    "Expiring",
    "Group",
    "MakeDirectory",
    "Members",
    "Observed",
    "Place",
    "ServerStep",
    "Shrink",
    "Step",
    "show",
]

#: The shortest retention (and, on 1.x, shard duration) InfluxDB accepts: 1.x refuses a shorter
#: policy ("retention policy duration must be at least 1h0m0s", seen on 1.6.7) and raises a
#: shorter shard duration to 1h on its own; the 2.x docs give the same minimum for buckets.
MIN_RETENTION = timedelta(hours=1)


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    #: An update that shortens a retention holding data older than the new one: the server
    #: deletes that data. Only with `allow_shrink`.
    SHRINK = "shrink"
    NONE = "none"


# -- what apply sends ------------------------------------------------------------------------------


class ServerStep(Protocol):
    """A change on one connection's server, made by its dialect (`Dialect.apply_step`): a 1.x
    statement, a 2.x bucket creation. Shown in logs by its `str`."""

    @property
    def connection(self) -> str:
        """The connection whose server the step changes."""

    @property
    def first(self) -> bool:
        """Whether the step goes before every other (a 1.x database, which another tier's
        retention policy may need)."""


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    path: Path

    @property
    def first(self) -> bool:
        return False


Step = ServerStep | MakeDirectory


class Place(Protocol):
    """Where a tier's data lives on its server (a 1.x retention policy, a 2.x bucket): what a
    shrinking retention would delete from. Its `str` names it in messages."""

    @property
    def connection(self) -> str:
        """The connection whose server holds it."""


@dataclass(frozen=True, slots=True)
class Shrink:
    """A retention about to get shorter (`old` None: it was infinite), for the data in `place`:
    data older than `new` will be deleted by the server, and jobs reading `tiers` must not
    need it."""

    tiers: tuple[str, ...]
    old: timedelta | None
    new: timedelta
    place: Place


@dataclass(frozen=True, slots=True)
class Expiring:
    """What the server would delete once a shrunk retention applies: the field values older
    than `cutoff` (now − the new retention), `count` of them; the oldest at `oldest` (ns since
    the epoch) in `measurement`. `count` 0: nothing older (an ordinary update)."""

    place: Place
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
class Directory:
    """A cold tier's archive location: `path` None for an object store."""

    url: str
    path: Path | None
    exists: bool = False
    problem: str | None = None


@dataclass
class Observed:
    """What the servers and the filesystem hold, as far as the declared tiers go.

    `places` maps (connection, place) to what the connection's dialect read there, in its own
    terms (a 1.x database's retention policies, a 2.x bucket); None: the place is missing.
    `scopes` maps a connection to what its dialect reads once per connection (1.x: the
    databases there are; 2.x: the org's ID, None if the server has no such org). Only the
    dialect that wrote an entry reads it."""

    places: dict[tuple[str, str], Any] = field(default_factory=dict)
    scopes: dict[str, Any] = field(default_factory=dict)
    directories: dict[str, Directory] = field(default_factory=dict)


Members = list[tuple[str, TierConfig]]


@dataclass(frozen=True, slots=True)
class Group:
    """The live tiers on one place of one connection (a 1.x database, a 2.x bucket: the first
    of `Dialect.place`), in config order: what a dialect observes and plans at once."""

    connection: str
    spec: ConnectionConfig
    place: str
    members: Members


# -- durations ------------------------------------------------------------------------------------

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
