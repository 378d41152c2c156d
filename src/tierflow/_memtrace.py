"""`tierflow run --trace-memory`: log the process's resident memory and the top allocation sites
at intervals, so a leak in a long-running daemon shows where it grows."""

from __future__ import annotations

import asyncio
import resource
import sys
import tracemalloc
from pathlib import Path

from tierflow._logging import log_event

__all__ = ["rss_bytes", "trace_memory"]


def rss_bytes() -> int:
    """Current resident set size (from /proc on Linux; the peak elsewhere)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


async def trace_memory(interval: float, top: int = 10) -> None:
    """Every `interval` seconds log `memory_sample`: RSS, traced total, and the `top` sites by
    size with their growth since the first sample. Runs until cancelled."""
    tracemalloc.start(25)
    baseline = tracemalloc.take_snapshot()
    try:
        while True:
            await asyncio.sleep(interval)
            snapshot = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),)
            )
            growth = snapshot.compare_to(baseline, "lineno")[:top]
            current, peak = tracemalloc.get_traced_memory()
            log_event(
                "memory_sample",
                rss_bytes=rss_bytes(),
                traced_bytes=current,
                traced_peak_bytes=peak,
                top=[
                    {
                        "site": str(stat.traceback[0]),
                        "size_bytes": stat.size,
                        "growth_bytes": stat.size_diff,
                        "count": stat.count,
                    }
                    for stat in growth
                ],
            )
    finally:
        tracemalloc.stop()
