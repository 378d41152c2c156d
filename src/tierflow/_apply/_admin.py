"""`tierflow apply`'s calls to the servers and the filesystem: reading what they hold (through
each connection's dialect: databases and retention policies, buckets; and the data a
shrinking retention would delete), the archive directories, and making one change."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tierflow._apply._model import Directory, Expiring, MakeDirectory, Observed, Shrink, Step
from tierflow._apply._plan import groups
from tierflow._config import Config
from tierflow._engines import Engine, dialect_for

__all__ = ["Engines", "expiring", "observe", "send"]


async def send(step: Step, engines: Engines) -> None:
    """Make one change."""
    if isinstance(step, MakeDirectory):
        step.path.mkdir(parents=True, exist_ok=True)
        return
    engine = engines.get(step.connection)
    await engine.dialect.admin().apply_step(engine, step)


class Engines:
    """One bare engine per connection (no retry layer: apply is run by a person, who can run it
    again), closed together."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._open: dict[str, Engine] = {}

    def get(self, name: str) -> Engine:
        if name not in self._open:
            connection = self.config.connections[name]
            self._open[name] = dialect_for(connection).make_engine(name, connection)
        return self._open[name]

    async def aclose(self) -> None:
        for engine in self._open.values():
            await engine.aclose()


# -- observing (reads only) ----------------------------------------------------------------------


async def observe(config: Config, engines: Engines) -> Observed:
    """Ask each server (and the filesystem) about every declared tier; change nothing."""
    observed = Observed()
    for group in groups(config):
        engine = engines.get(group.connection)
        await engine.dialect.admin().observe_group(engine, group, observed)
    for name, tier in config.tiers.items():
        if tier.archive is not None:
            observed.directories[name] = _directory(tier.archive, config)
    return observed


def _directory(url: str, config: Config) -> Directory:
    if url.startswith("s3://"):
        return Directory(url, None)
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            return Directory(url, None, problem=f"archive {url!r}: use file:///absolute/path")
        path = Path(unquote(parts.path))
    elif "://" in url:
        return Directory(url, None, problem=f"archive {url!r}: not a path, file:// or s3:// URL")
    else:
        # Relative to the config file, as the archive jobs read it.
        path = Path(url) if url.startswith("/") else config.path.parent / url
    if path.exists():
        if not path.is_dir():
            return Directory(url, path, problem=f"archive {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            return Directory(url, path, problem=f"archive directory {path} is not writable")
        return Directory(url, path, exists=True)
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Directory(
            url, path, problem=f"archive directory {path} cannot be made: {parent} is not writable"
        )
    return Directory(url, path)


# -- what a shrinking retention would delete (reads only) ----------------------------------------


async def expiring(shrink: Shrink, engines: Engines, now: datetime) -> Expiring:
    """Ask the server what it holds in `shrink.place` older than now − the new retention: the
    data it will delete once the shrink is made."""
    engine = engines.get(shrink.place.connection)
    return await engine.dialect.admin().expiring(engine, shrink.place, now - shrink.new)
