"""What the translation of a CQ (1.x) or a task (2.x) hands to the config: the job's keys, its
tiers, a query job's template, and comments."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["TierT", "Translation"]

TierT = TypeVar("TierT", bound=Hashable)


@dataclass(slots=True, kw_only=True)
class Translation(Generic[TierT]):
    """The job's keys (in order; tiers as `source`/`dest`), the template text of a query job (to
    be written to a file), comments to print above it, and `refused` reasons that leave the whole
    job commented out."""

    kind: str | None = None
    keys: dict[str, Any] = field(default_factory=dict)
    source: TierT | None = None
    dest: TierT | None = None
    template: str | None = None
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
