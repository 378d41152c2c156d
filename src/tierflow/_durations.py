"""Durations as people write them in configs (`90s`, `5m`, `1h30m`, `400d`, `2w`)."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

# Unit sizes in milliseconds: integer arithmetic, so "100000d1ms" keeps its millisecond.
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style text into a timedelta; raise ValueError naming the accepted units."""
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"invalid duration {text!r}: expected a whole number and a unit "
            "(ms, s, m, h, d, w), e.g. '90s', '5m', '1h30m'"
        )
    millis = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    try:
        return timedelta(milliseconds=millis)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long (the limit is 999999999 days)") from None


def format_duration(delta: timedelta) -> str:
    """The shortest `1h30m`-style text for a whole number of seconds (e.g. `300s` → `5m`)."""
    micros = delta // timedelta(microseconds=1)
    if micros <= 0:
        raise ValueError(f"duration must be positive, got {delta}")
    if micros % 1000:
        raise ValueError(f"duration {delta} is finer than a millisecond")
    if micros % 1_000_000:
        return f"{micros // 1000}ms"
    seconds = micros // 1_000_000
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
