"""URLs in the config: credentials are refused, relative state paths are anchored.

tierflow takes no credentials from a URL. A URL travels far: into every connection error, log
line, `validate` problem and the state store's error columns, which outlive the config. Taking
`user:password@` as the credentials would mean redacting it from every one of those, forever;
refusing it at load cannot leak, and the secret sources (`password = { env = … }`, `token = …`)
already do what the URL form was for. The checks never echo the URL they refuse.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "archive_url_problem",
    "connection_url_problem",
    "credential_problems",
    "redact_url",
    "resolve_state_url",
    "state_left_behind",
    "state_url_problem",
]

_SQLITE = "sqlite:///"


def redact_url(text: str) -> str:
    """`text` with whatever may be a credential in it, if it is a URL, replaced by `<redacted>`:
    everything before the last `@` of what follows `://` (a password may hold `/`, so the
    authority cannot be trusted to end at the first one), and any query or fragment."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    if "@" in rest:
        rest = "<redacted>@" + rest.rpartition("@")[2]
    for mark in "?#":
        head, found, _ = rest.partition(mark)
        if found:
            rest = f"{head}{mark}<redacted>"
    return f"{scheme}{sep}{rest}"


def connection_url_problem(url: str, kind: object) -> str | None:
    """Why a connection URL is refused, or None: it holds `user:password@` (any `@` after `://`:
    an unencoded password may hold `/`), or a query or fragment (InfluxDB 1.x takes `?u=…&p=…`,
    and tierflow appends its own paths to the URL)."""
    _, sep, rest = url.partition("://")
    from tierflow._engines import KINDS, dialect_for

    hints = {name: dialect_for(name).credentials_hint for name in KINDS}
    where = hints.get(kind) if isinstance(kind, str) else None
    secrets = where or " or ".join(hints.values())
    if sep and "@" in rest:
        return (
            "holds a user name or password (user:…@); tierflow takes no credentials from a "
            "URL, which would show in every error, log line and state record: write it "
            f"without them and set {secrets}"
        )
    if sep and ("?" in rest or "#" in rest):
        return (
            "has a query string or fragment; tierflow adds its own paths and parameters to "
            f"the URL, and credentials (u=, p=, token=) do not go there: set {secrets}"
        )
    return None


def archive_url_problem(url: str) -> str | None:
    """Why a cold tier's `archive` URL is refused, or None: credentials before an `@`, an S3
    bucket with a `:` (`s3://KEY:SECRET/…@bucket` splits at a `/` in the secret), or a
    `file://` URL with a host (which may be a `user:password`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    if scheme == "file":
        host = rest.partition("/")[0]
        if host not in {"", "localhost"}:
            return "a file:// URL names no host or user: use file:///absolute/path"
        return None
    if "@" in rest or (scheme == "s3" and ":" in rest.partition("/")[0]):
        return (
            "holds credentials (KEY:SECRET@ before the bucket); tierflow takes none from a URL, "
            "which would show in every error and log line: write s3://bucket/prefix and give "
            "the keys the usual AWS way (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            "environment, a profile, or an instance role)"
        )
    return None


def state_url_problem(url: str) -> str | None:
    """Why a state URL is refused, or None: a password in it (`user:password@`, or libpq's
    `?password=`). A user name alone is fine (`postgresql://tierflow@db/tierflow`)."""
    if url.startswith(_SQLITE):
        return None  # a path follows, whatever characters it holds
    _, sep, rest = url.partition("://")
    if not sep:
        return None
    userinfo = rest.rpartition("@")[0]
    query = rest.partition("?")[2]
    keys = {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
    if ":" in userinfo or "password" in keys:
        return (
            "holds a password; tierflow takes none from the state URL, which `status` shows "
            "and errors name: write postgresql://user@host/db and give the password through "
            "[state] password = { env = ... } (or { file = ... }, { command = [...] }), or "
            "libpq's PGPASSWORD or ~/.pgpass"
        )
    return None


def resolve_state_url(url: str, base: Path) -> str:
    """`url` with a relative SQLite path made absolute against `base` (the config file's
    directory, or the working directory for `TIERFLOW_STATE`), so that every command finds the
    same state wherever it is run from."""
    if not url.startswith(_SQLITE):
        return url
    path = url.removeprefix(_SQLITE)
    if not path or path.startswith("/"):
        return url
    return _SQLITE + str(base.absolute() / path)


def state_left_behind(written: str, resolved: str) -> str | None:
    """Earlier versions read a relative state path from the working directory. A state file there,
    and none where the path now leads, is that state: starting afresh beside the config would
    run every window again, so say where it is instead."""
    if written == resolved:
        return None
    old = Path(written.removeprefix(_SQLITE)).absolute()
    new = Path(resolved.removeprefix(_SQLITE))
    if new.exists() or not old.is_file():
        return None
    return (
        f"a relative state path is relative to the config file's directory ({new} does not "
        f"exist), but {old} exists where tierflow read it from before (the working "
        "directory): move that file there, or write its absolute path (sqlite:////…)"
    )


def credential_problems(raw: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(table, key, why) of every URL in a raw config that holds credentials. Raw tables, so a
    table that fails validation for another reason is still checked."""

    def tables(section: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        named = raw.get(section)
        if isinstance(named, Mapping):
            yield from ((n, b) for n, b in named.items() if isinstance(b, Mapping))

    state = raw.get("state")
    url = state.get("url") if isinstance(state, Mapping) else None
    if isinstance(url, str) and (problem := state_url_problem(url)):
        yield ("state",), "url", problem
    for name, body in tables("connections"):
        url = body.get("url")
        if isinstance(url, str) and (problem := connection_url_problem(url, body.get("kind"))):
            yield ("connections", name), "url", problem
    for name, body in tables("tiers"):
        url = body.get("archive")
        if isinstance(url, str) and (problem := archive_url_problem(url)):
            yield ("tiers", name), "archive", problem
