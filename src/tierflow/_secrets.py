"""Where credentials come from: a literal, an environment variable, a file, a command,
HashiCorp Vault (KV v2) or AWS Secrets Manager.

A `SecretSource` is config (safe to print: it names the source, never the value); `resolve()`
fetches the value each time it is asked, so a rotated file or variable is picked up without a
restart. Command, Vault and AWS values are cached for `ttl` so a slow helper or a remote service
is not asked on every request; `refresh()` (after a 401) forgets the cached value.
`aresolve()` is the form for async code: a value still cached is returned at once, and a fetch
that blocks (a command, Vault, AWS) runs on a worker thread, never on the event loop.

The Vault (`hvac`) and AWS (`boto3`) clients are imported only when such a source resolves
(`pip install 'tierflow[vault]'` / `'tierflow[aws]'`); `vault_client` and `aws_client` are the
seams the tests replace with fakes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from tierflow._durations import parse_duration
from tierflow._errors import SecretError

__all__ = [
    "AwsSecret",
    "CommandSecret",
    "EnvSecret",
    "FileSecret",
    "LiteralSecret",
    "SecretSource",
    "VaultSecret",
    "aresolve",
    "refresh",
]


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


#: A cache lifetime written like every other duration in the config (`"5m"`).
Ttl = Annotated[timedelta, BeforeValidator(_duration)]


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
        return _cache.get(self, self.ttl, _run_command)

    def describe(self) -> str:
        return f"command {self.command[0]}"


class VaultSecret(_Source):
    """A key of a HashiCorp Vault KV v2 secret: `{ vault = "influx/tierflow", key = "token" }`.
    Vault's address and token come from `url` or hvac's usual `VAULT_ADDR`/`VAULT_TOKEN`."""

    kind: Literal["vault"] = "vault"
    vault: str = Field(min_length=1)
    key: str = Field(default="token", min_length=1)
    mount: str = Field(default="secret", min_length=1)
    url: str | None = None
    ttl: Ttl = timedelta(minutes=5)

    def resolve(self) -> str:
        return _cache.get(self, self.ttl, _read_vault)

    def describe(self) -> str:
        return f"Vault secret {self.mount}/{self.vault} key {self.key}"


class AwsSecret(_Source):
    """An AWS Secrets Manager secret: `{ aws_secret = "prod/influx", key = "token" }` (`key`
    picks a field of a JSON secret; without it the whole string is the secret)."""

    kind: Literal["aws"] = "aws"
    aws_secret: str = Field(min_length=1)
    key: str | None = None
    region: str | None = None
    ttl: Ttl = timedelta(minutes=5)

    def resolve(self) -> str:
        return _cache.get(self, self.ttl, _read_aws)

    def describe(self) -> str:
        return f"AWS secret {self.aws_secret}" + (f" key {self.key}" if self.key else "")


_Cached = CommandSecret | VaultSecret | AwsSecret


class _TtlCache:
    """Caches a fetched secret per source for its ttl; `invalidate` forces the next fetch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[_Cached, tuple[float, str]] = {}

    def peek(self, source: _Cached, ttl: timedelta) -> str | None:
        """The cached value of `source` while it is fresh, else None."""
        with self._lock:
            cached = self._values.get(source)
            if cached and time.monotonic() - cached[0] < ttl.total_seconds():
                return cached[1]
        return None

    def get(self, source: Any, ttl: timedelta, fetch: Callable[[Any], str]) -> str:
        cached = self.peek(source, ttl)
        if cached is not None:
            return cached
        value = fetch(source)
        with self._lock:
            self._values[source] = (time.monotonic(), value)
        return value

    def invalidate(self, source: _Cached) -> None:
        with self._lock:
            self._values.pop(source, None)


_cache = _TtlCache()


def _hvac_client(source: VaultSecret) -> Any:
    try:
        hvac: Any = importlib.import_module("hvac")
    except ImportError:
        raise SecretError(
            f"{source.describe()}: Vault sources need hvac: pip install 'tierflow[vault]'"
        ) from None
    return hvac.Client(url=source.url) if source.url else hvac.Client()


def _boto3_client(source: AwsSecret) -> Any:
    try:
        boto3: Any = importlib.import_module("boto3")
    except ImportError:
        raise SecretError(
            f"{source.describe()}: AWS sources need boto3: pip install 'tierflow[aws]'"
        ) from None
    return boto3.client("secretsmanager", region_name=source.region)


#: Make the client a Vault source reads through (tests put a fake here).
vault_client: Callable[[VaultSecret], Any] = _hvac_client
#: Make the Secrets Manager client an AWS source reads through (tests put a fake here).
aws_client: Callable[[AwsSecret], Any] = _boto3_client


def _read_vault(source: VaultSecret) -> str:
    client = vault_client(source)
    try:
        response = client.secrets.kv.v2.read_secret_version(
            path=source.vault, mount_point=source.mount, raise_on_deleted_version=True
        )
        data = response["data"]["data"]
    except Exception as exc:  # hvac's errors and requests'; their text may echo the response
        raise SecretError(f"cannot read {source.describe()}: {type(exc).__name__}") from None
    return _non_empty(source, data.get(source.key) if isinstance(data, dict) else None)


def _read_aws(source: AwsSecret) -> str:
    client = aws_client(source)
    try:
        response = client.get_secret_value(SecretId=source.aws_secret)
    except Exception as exc:  # botocore's errors; report the kind, never the payload
        raise SecretError(f"cannot read {source.describe()}: {type(exc).__name__}") from None
    value = response.get("SecretString") if isinstance(response, dict) else None
    if source.key is not None:
        try:
            document = json.loads(value or "")
        except ValueError:
            raise SecretError(f"{source.describe()}: the secret is not a JSON object") from None
        value = document.get(source.key) if isinstance(document, dict) else None
    return _non_empty(source, value)


def _non_empty(source: VaultSecret | AwsSecret, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SecretError(f"{source.describe()} is missing, empty or not a string")
    return value.strip()


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


async def aresolve(source: SecretSource) -> str:
    """`source.resolve()` for async code: a fresh cached value at once; a command, Vault or AWS
    fetch on a worker thread (`asyncio.to_thread`), so the event loop never waits on it. The
    cache and `refresh()` are the ones `resolve()` uses."""
    if isinstance(source, CommandSecret | VaultSecret | AwsSecret):
        cached = _cache.peek(source, source.ttl)
        return cached if cached is not None else await asyncio.to_thread(source.resolve)
    # A literal, a variable or a small local file: nothing worth a thread.
    return source.resolve()


def refresh(source: SecretSource) -> None:
    """Forget any cached value: the next `resolve()` fetches the secret afresh (after a 401)."""
    if isinstance(source, CommandSecret | VaultSecret | AwsSecret):
        _cache.invalidate(source)


SecretSource = Annotated[
    LiteralSecret | EnvSecret | FileSecret | CommandSecret | VaultSecret | AwsSecret,
    Field(discriminator="kind"),
]
