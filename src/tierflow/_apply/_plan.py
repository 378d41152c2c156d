"""`tierflow apply`'s planner, pure: what the tiers declare and what the servers hold in, the
changes to make and the problems that forbid them out. Each connection's dialect plans its own
places (`Dialect.plan_group`) with the helpers here; this module knows no server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tierflow._apply._model import (
    MIN_RETENTION,
    Action,
    Change,
    Directory,
    Group,
    MakeDirectory,
    Members,
    Observed,
    Place,
    Shrink,
    show,
)
from tierflow._config import Config
from tierflow._engines import KINDS, dialect_for

__all__ = ["Want", "agree", "groups", "plan_changes", "shared", "shrinking", "wanted"]


@dataclass(frozen=True, slots=True)
class Want:
    """What the tiers on one policy or bucket declare (None: not declared, left as it is)."""

    retention: timedelta | None
    shard: timedelta | None


def plan_changes(config: Config, observed: Observed) -> tuple[list[Change], list[str]]:
    """One change per tier, in config order, and the problems that forbid applying them."""
    problems = _check_values(config)
    changes: dict[str, Change] = {}
    for group in groups(config):
        changes |= dialect_for(group.spec).admin().plan_group(group, observed, problems)
    for tier, directory in observed.directories.items():
        changes[tier] = _plan_directory(tier, directory, problems)
    return [changes[tier] for tier in config.tiers if tier in changes], problems


def groups(config: Config) -> list[Group]:
    """The live tiers by (connection, place), in registry order of their connections' kinds and
    then in config order (the order apply has always read and planned them in)."""
    found: dict[tuple[str, str], Group] = {}
    for name, tier in config.tiers.items():
        if tier.is_archive:
            continue
        spec = config.connections[tier.connection]
        place, _ = dialect_for(spec).place(spec, tier)
        key = (tier.connection, place)
        found.setdefault(key, Group(tier.connection, spec, place, [])).members.append((name, tier))
    order = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(found.values(), key=lambda group: order[group.spec.kind])


def _check_values(config: Config) -> list[str]:
    problems: list[str] = []
    for name, tier in config.tiers.items():
        if tier.is_archive:
            continue
        minimums = dialect_for(config.connections[tier.connection]).admin().minimums
        for key in minimums:
            value = getattr(tier, key)
            if value is not None and value < MIN_RETENTION:
                problems.append(
                    f"tier {name}: {key} {show(value)} is below the server's minimum of 1h"
                )
        for key, value in [("retention", tier.retention), ("shard_duration", tier.shard_duration)]:
            if value is not None and value % timedelta(seconds=1):
                problems.append(f"tier {name}: {key} {show(value)} is not whole seconds")
        if tier.retention and tier.shard_duration and tier.shard_duration > tier.retention:
            problems.append(
                f"tier {name}: shard_duration {show(tier.shard_duration)} is longer than "
                f"retention {show(tier.retention)}"
            )
    return problems


# -- helpers for the dialects' planners ----------------------------------------------------------


def shared(change: Change, tiers: Sequence[str]) -> dict[str, Change]:
    """`change` for the first tier; the others on the same policy or bucket point at it."""
    changes = {tiers[0]: change}
    for tier in tiers[1:]:
        changes[tier] = Change(tier, change.action, f"{change.detail} (as for tier {tiers[0]})")
    return changes


def agree(label: str, group: Members, problems: list[str]) -> Want:
    """What the tiers sharing `label` declare; a problem for each value they disagree about."""
    values: dict[str, timedelta | None] = {}
    for key in ("retention", "shard_duration"):
        declared = [(t, getattr(s, key)) for t, s in group if getattr(s, key) is not None]
        if len({value for _, value in declared}) > 1:
            listing = ", ".join(f"tier {t} says {show(value)}" for t, value in declared)
            problems.append(f"{label}: its tiers disagree about {key}: {listing}")
        values[key] = declared[0][1] if declared else None
    return Want(values["retention"], values["shard_duration"])


def shrinking(
    tiers: tuple[str, ...], old: timedelta | None, new: timedelta | None, place: Place
) -> Shrink | None:
    """A `Shrink` if the retention gets shorter (`old` None: it was infinite), else None."""
    if new is None or (old is not None and new >= old):
        return None
    return Shrink(tiers, old, new, place)


def wanted(want: Want, noun: str = "duration") -> str:
    """The declared values in words, for a change's detail."""
    text = (
        f"{noun} {show(want.retention)}"
        if want.retention is not None
        else f"{noun} infinite (no retention declared)"
    )
    return text + (f", shard duration {show(want.shard)}" if want.shard is not None else "")


def _plan_directory(tier: str, directory: Directory, problems: list[str]) -> Change:
    if directory.problem is not None:
        problems.append(f"tier {tier}: {directory.problem}")
        return Change(tier, Action.NONE, directory.problem)
    if directory.path is None:
        return Change(tier, Action.NONE, f"{directory.url}: an object store, nothing to make")
    if directory.exists:
        return Change(tier, Action.NONE, f"directory {directory.path} exists and is writable")
    return Change(
        tier, Action.CREATE, f"directory {directory.path}", (MakeDirectory(directory.path),)
    )
