"""Reading a 3.x window for archives and relays (owned by the transfers work of issue #15;
a placeholder until it lands)."""

from __future__ import annotations

__all__: list[str] = []
