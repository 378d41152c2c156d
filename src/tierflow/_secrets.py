"""Where credentials come from: a literal, an environment variable, a file, or a command.

A `SecretSource` is config (safe to print: it names the source, never the value); `resolve()`
fetches the value each time it is asked, so a rotated file or variable is picked up without a
restart. Command output is cached for `ttl` so a slow helper is not run on every request.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tierflow._errors import SecretError

__all__ = ["CommandSecret", "EnvSecret", "FileSecret", "LiteralSecret", "SecretSource"]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LiteralSecret(_Source):
    """A secret written into the config itself. Works, but config files get shared: we warn."""

    kind: Literal["literal"] = "literal"
    value: SecretStr

    def resolve(self) -> str:
        return self.value.get_secret_value()

    def describe(self) -> str:
        return "a literal in the config"


class EnvSecret(_Source):
    kind: Literal["env"] = "env"
    env: str = Field(min_length=1)

    def resolve(self) -> str:
        value = os.environ.get(self.env)
        if not value:
            raise SecretError(f"environment variable {self.env} is not set or empty")
        return value

    def describe(self) -> str:
        return f"environment variable {self.env}"


class FileSecret(_Source):
    kind: Literal["file"] = "file"
    file: Path

    def resolve(self) -> str:
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"secret file {self.file} is empty")
        return value

    def describe(self) -> str:
        return f"file {self.file}"


class CommandSecret(_Source):
    kind: Literal["command"] = "command"
    command: tuple[str, ...] = Field(min_length=1)
    timeout: timedelta = timedelta(seconds=10)
    ttl: timedelta = timedelta(minutes=5)

    def resolve(self) -> str:
        return _command_cache.get(self)

    def describe(self) -> str:
        return f"command {self.command[0]}"


class _CommandCache:
    """Caches command output per source for its ttl; `invalidate` forces the next run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[CommandSecret, tuple[float, str]] = {}

    def get(self, source: CommandSecret) -> str:
        with self._lock:
            cached = self._values.get(source)
            if cached and time.monotonic() - cached[0] < source.ttl.total_seconds():
                return cached[1]
        value = _run_command(source)
        with self._lock:
            self._values[source] = (time.monotonic(), value)
        return value

    def invalidate(self, source: CommandSecret) -> None:
        with self._lock:
            self._values.pop(source, None)


_command_cache = _CommandCache()


def _run_command(source: CommandSecret) -> str:
    name = source.command[0]
    try:
        done = subprocess.run(  # the operator's own command
            list(source.command),
            capture_output=True,
            timeout=source.timeout.total_seconds(),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(f"secret command {name} did not finish within {source.timeout}") from None
    except OSError as exc:
        raise SecretError(f"cannot run secret command {name}: {exc.strerror}") from None
    if done.returncode != 0:
        # stderr may echo the secret; report only the exit status.
        raise SecretError(f"secret command {name} exited with status {done.returncode}")
    value = done.stdout.decode("utf-8", "replace").strip()
    if not value:
        raise SecretError(f"secret command {name} printed nothing")
    return value


def refresh(source: SecretSource) -> None:
    """Forget any cached value: the next `resolve()` fetches the secret afresh (after a 401)."""
    if isinstance(source, CommandSecret):
        _command_cache.invalidate(source)


SecretSource = Annotated[
    LiteralSecret | EnvSecret | FileSecret | CommandSecret, Field(discriminator="kind")
]
