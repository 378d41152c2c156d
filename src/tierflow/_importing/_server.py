"""Talking to the server an import reads: a connection made from the command's options (a
secret only from the environment, a file or a command, never the command line), one attempt per
request (a wrong URL should fail at once, not after a minute of retries), and every failure as
bad input that names the server and never the secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from tierflow._config._models import InfluxDB1Connection, InfluxDB2Connection, RetryConfig
from tierflow._engines import Engine, dialect_for
from tierflow._errors import InvalidInputError
from tierflow._secrets import CommandSecret, EnvSecret, FileSecret, SecretSource
from tierflow._url_checks import connection_url_problem, redact_url

__all__ = [
    "Connection",
    "connection_keys",
    "open_engine",
    "reading",
    "secret_source",
    "server_error",
]


_MODELS: dict[str, type[InfluxDB1Connection] | type[InfluxDB2Connection]] = {
    "influxdb1": InfluxDB1Connection,
    "influxdb2": InfluxDB2Connection,
}


@dataclass(frozen=True, slots=True)
class Connection:
    """The server to import from, as the command names it."""

    url: str
    username: str | None = None
    secret: SecretSource | None = None  # 1.x password, 2.x token
    org: str | None = None


def secret_source(env: str | None, file: Path | None, command: list[str] | None) -> SecretSource:
    """The one secret source among the options given (exit 2 for none or several)."""
    given: list[SecretSource] = []
    if env:
        given.append(EnvSecret(env=env))
    if file is not None:
        given.append(FileSecret(file=file))
    if command:
        given.append(CommandSecret(command=tuple(command)))
    if len(given) != 1:
        raise InvalidInputError(
            "give exactly one of the secret's options (…-env VAR, …-file PATH, …-command CMD)"
        )
    return given[0]


def _config(connection: Connection, kind: str) -> InfluxDB1Connection | InfluxDB2Connection:
    problem = connection_url_problem(connection.url, kind)
    if problem is not None:
        raise InvalidInputError(f"--url {problem}")
    # One attempt: the import asks a few questions once.
    keys: dict[str, Any] = {"kind": kind, "url": connection.url, "retry": RetryConfig(attempts=1)}
    model = _MODELS[kind]
    if model is InfluxDB2Connection:
        keys.update(org=connection.org, token=connection.secret)
    else:
        keys.update(username=connection.username, password=connection.secret)
    try:
        return model.model_validate(keys)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(f"--url {redact_url(connection.url)}: {problems}") from None


def open_engine(connection: Connection, kind: str) -> Engine:
    """An engine (no retries) on the server `connection` names."""
    config = _config(connection, kind)
    return dialect_for(config).make_engine("import", config)


@asynccontextmanager
async def reading(connection: Connection, kind: str) -> AsyncIterator[Engine]:
    """An engine on the server `connection` names, closed on leaving; a failure talking to it is
    raised as `server_error` (bad input raised inside passes unchanged)."""
    engine = open_engine(connection, kind)
    try:
        yield engine
    except InvalidInputError:
        raise
    except Exception as exc:
        raise server_error(connection.url, exc) from exc
    finally:
        await engine.aclose()


def server_error(url: str, exc: BaseException) -> InvalidInputError:
    """A failure talking to the server as bad input: unreachable, refused credentials, a
    missing database or org. Engine and secret errors never hold a secret's value."""
    return InvalidInputError(f"{redact_url(url)}: {exc}")


def connection_keys(connection: Connection, kind: str) -> dict[str, Any]:
    """The connection's table in the imported config: the secret by its source, never its value."""
    keys: dict[str, Any] = {"kind": kind, "url": connection.url}
    if connection.org is not None:
        keys["org"] = connection.org
    if connection.username is not None:
        keys["username"] = connection.username
    if connection.secret is not None:
        keys["token" if connection.org is not None else "password"] = _source_keys(
            connection.secret
        )
    return keys


def _source_keys(source: SecretSource) -> dict[str, Any]:
    if isinstance(source, EnvSecret):
        return {"env": source.env}
    if isinstance(source, FileSecret):
        return {"file": str(source.file)}
    if isinstance(source, CommandSecret):
        return {"command": list(source.command)}
    raise InvalidInputError("only env, file and command secrets can be imported from")
