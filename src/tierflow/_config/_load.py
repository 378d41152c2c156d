"""Loading: TOML to raw tables, each validated into its model, every problem collected and
reported at once (naming file, table, key and value); the environment's state URL; warnings
about literal secrets."""

from __future__ import annotations

import difflib
import os
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from tierflow._config._checks import (
    _check_job_kinds,
    _cross_check,
    _listing,
)
from tierflow._config._models import (
    _CONNECTION_KINDS,
    _JOB_KINDS,
    _NAME,
    _SECRET_SHORTHANDS,
    DEFAULT_CONFIG,
    Config,
    ConnectionConfig,
    M,
    SchedulerConfig,
    ServerConfig,
    StateConfig,
    TierConfig,
)
from tierflow._config._problems import (
    _MISSING,
    _SECRET_KEYS,
    _SECTIONS,
    _Problem,
    _table_name,
)
from tierflow._errors import ConfigError
from tierflow._secrets import LiteralSecret
from tierflow._url_checks import (
    credential_problems,
    resolve_state_url,
    state_left_behind,
    state_url_problem,
)

__all__ = ["load_config", "parse_config"]


def load_config(path: Path | str | None = None) -> Config:
    """Read, validate and cross-check a TOML config; raise ConfigError listing every problem."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: Mapping[str, Any], path: Path) -> Config:
    """Validate an already-parsed TOML document (see `load_config`)."""
    problems = [
        _Problem(
            "", key, _MISSING, "unknown top-level table or key" + _did_you_mean(key, _SECTIONS)
        )
        for key in sorted(set(raw) - _SECTIONS)
    ]

    state = _validate(StateConfig, raw.get("state", {}), ("state",), problems)
    scheduler = _validate(SchedulerConfig, raw.get("scheduler", {}), ("scheduler",), problems)
    server = (
        _validate(ServerConfig, raw["server"], ("server",), problems) if "server" in raw else None
    )
    state = _resolved_state(state, path, problems)
    connections = _validate_named(raw, "connections", _CONNECTION_KINDS, problems)
    tiers = {
        name: tier
        for name, body in _named_tables(raw, "tiers", problems)
        if (tier := _validate(TierConfig, body, ("tiers", name), problems)) is not None
    }
    jobs = _validate_named(raw, "jobs", _JOB_KINDS, problems)

    declared = _Declared(_names(raw, "connections"), _names(raw, "tiers"))
    problems.extend(_check_references(raw, declared))
    problems.extend(_check_url_credentials(raw))
    problems.extend(_cross_check(tiers, jobs, connections))
    problems.extend(_check_job_kinds(path, connections, tiers, jobs))
    from tierflow._overlap import check_overlaps  # it builds on this module's models

    problems.extend(check_overlaps(tiers, jobs, connections))
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problem(s) in the config\n"
            + "\n".join("  " + p.render(path) for p in problems)
        )
    _warn_literal_secrets(connections, path)
    if state is not None and isinstance(state.password, LiteralSecret):
        warnings.warn(
            f"{path}: [state] password is written into the config; "
            "prefer { env = ... }, { file = ... } or { command = [...] }",
            stacklevel=2,
        )
    if server is not None and isinstance(server.token, LiteralSecret):
        warnings.warn(
            f"{path}: [server] token is written into the config; "
            "prefer { env = ... }, { file = ... } or { command = [...] }",
            stacklevel=2,
        )
    return Config(
        path,
        state or StateConfig(),
        connections,
        tiers,
        jobs,
        scheduler or SchedulerConfig(),
        server,
    )


def _resolved_state(
    state: StateConfig | None, path: Path, problems: list[_Problem]
) -> StateConfig | None:
    """The state URL, with `TIERFLOW_STATE` over the file's, its relative SQLite path anchored:
    the file's against the file's directory (like templates and archives), the environment's
    against the working directory (where the user typing it stands)."""
    if url := os.environ.get("TIERFLOW_STATE"):
        if problem := state_url_problem(url):
            problems.append(_Problem("state", "url", _MISSING, f"from TIERFLOW_STATE: {problem}"))
        # The file's password still applies: the variable moves the state, not its secret.
        password = state.password if state is not None else None
        return StateConfig(url=resolve_state_url(url, Path.cwd()), password=password)
    if state is None:
        return None
    resolved = state.model_copy(
        update={"url": resolve_state_url(state.url, path.absolute().parent)}
    )
    if problem := state_left_behind(state.url, resolved.url):
        problems.append(_Problem("state", "url", state.url, problem))
    return resolved


def _check_url_credentials(raw: Mapping[str, Any]) -> list[_Problem]:
    """URLs that hold credentials, named by table and key and never shown."""
    return [
        _Problem(_table_name(*table), key, _MISSING, message)
        for table, key, message in credential_problems(raw)
    ]


def _named_tables(
    raw: Mapping[str, Any], section: str, problems: list[_Problem]
) -> Iterable[tuple[str, Mapping[str, Any]]]:
    tables = raw.get(section, {})
    if not isinstance(tables, Mapping):
        problems.append(_Problem("", section, tables, "must be a table of named tables"))
        return
    for name, body in tables.items():
        if not isinstance(body, Mapping):
            problems.append(_Problem(section, name, body, "must be a table"))
        elif not _NAME.fullmatch(name):
            problems.append(
                _Problem(
                    _table_name(section, name),
                    None,
                    _MISSING,
                    "names may hold letters, digits, '_' and '-' and start with a letter",
                )
            )
        else:
            yield name, body


def _validate_named(
    raw: Mapping[str, Any], section: str, kinds: Mapping[str, type[M]], problems: list[_Problem]
) -> dict[str, M]:
    valid: dict[str, M] = {}
    for name, body in _named_tables(raw, section, problems):
        table = _table_name(section, name)
        kind = body.get("kind")
        model = kinds.get(kind) if isinstance(kind, str) else None
        if model is None:
            value = _MISSING if kind is None else kind
            message = "missing" if kind is None else "unknown kind"
            problems.append(
                _Problem(table, "kind", value, f"{message}; expected one of: {', '.join(kinds)}")
            )
            continue
        if (item := _validate(model, body, (section, name), problems)) is not None:
            valid[name] = item
    return valid


def _validate(
    model: type[M], body: object, table: tuple[str, ...], problems: list[_Problem]
) -> M | None:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems.extend(_from_pydantic(table, body, error, model) for error in exc.errors())
        return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_pydantic(
    table: tuple[str, ...], body: object, error: Any, model: type[BaseModel]
) -> _Problem:
    loc = [str(part) for part in error["loc"]]
    # Discriminated secret unions add the tag to the location; it is not a key the user wrote.
    loc = [part for part in loc if part not in {*_SECRET_SHORTHANDS.values(), "literal"}] or loc
    key = ".".join(loc) if loc else None
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        if len(loc) == 1:
            keys = (info.alias or name for name, info in model.model_fields.items())
            message += _did_you_mean(loc[0], keys)
    elif error["type"] == "missing":
        message = "required key is missing"
        return _Problem(_table_name(*table), key, _MISSING, message)
    value: object = error.get("input", _MISSING) if loc else _MISSING
    if any(part in _SECRET_KEYS for part in loc):
        value = "<redacted>"
    return _Problem(_table_name(*table), key, value, message)


@dataclass(frozen=True, slots=True)
class _Declared:
    """Names declared in the file, valid or not, so one bad table does not cascade into many."""

    connections: frozenset[str]
    tiers: frozenset[str]


def _names(raw: Mapping[str, Any], section: str) -> frozenset[str]:
    tables = raw.get(section, {})
    return frozenset(tables) if isinstance(tables, Mapping) else frozenset()


def _check_references(raw: Mapping[str, Any], declared: _Declared) -> list[_Problem]:
    """Checks that need only the raw tables, so they run even where a table failed validation
    (one edit should fix every problem, not reveal the next)."""
    problems: list[_Problem] = []
    for name, body in _named_tables(raw, "tiers", []):
        if "archive" not in body:
            problems.extend(
                _Problem(
                    _table_name("tiers", name),
                    key,
                    _MISSING,
                    "required key is missing",
                )
                for key in ("connection", "bucket")
                if key not in body
            )
        connection = body.get("connection")
        if isinstance(connection, str) and connection not in declared.connections:
            problems.append(
                _Problem(
                    _table_name("tiers", name),
                    "connection",
                    connection,
                    f"no such connection; defined: {_listing(declared.connections)}",
                )
            )
    for name, body in _named_tables(raw, "jobs", []):
        table = _table_name("jobs", name)
        for key in ("source", "dest"):
            tier = body.get(key)
            if isinstance(tier, str) and tier not in declared.tiers:
                problems.append(
                    _Problem(table, key, tier, f"no such tier; defined: {_listing(declared.tiers)}")
                )
        if body.get("kind") in _JOB_KINDS and ("every" in body) == ("cron" in body):
            key = "cron" if "every" in body else "every"
            value = body.get(key, _MISSING)
            problems.append(_Problem(table, key, value, "set exactly one of 'every' and 'cron'"))
    return problems


def _warn_literal_secrets(connections: Mapping[str, ConnectionConfig], path: Path) -> None:
    from tierflow._engines import dialect_for

    for name, connection in connections.items():
        key, secret = dialect_for(connection).secret(connection)
        if isinstance(secret, LiteralSecret):
            warnings.warn(
                f"{path}: [connections.{name}] {key} is written into the config; "
                "prefer { env = ... }, { file = ... } or { command = [...] }",
                stacklevel=3,
            )
