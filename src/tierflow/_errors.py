"""tierflow's exception tree: every error the library raises derives from `TierflowError`."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "EngineError",
    "QueryError",
    "SecretError",
    "StateError",
    "TemplateError",
    "TierflowError",
    "TransientEngineError",
    "UnknownJobError",
]


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""


class ConfigError(TierflowError):
    """The configuration is invalid; the message names the file, table, key and value."""


class UnknownJobError(TierflowError):
    """A job name that the config does not define."""


class SecretError(TierflowError):
    """A secret could not be resolved. The message names the source, never the secret."""


class TemplateError(TierflowError):
    """A query template failed to load or render, or rendered something unsafe."""


class StateError(TierflowError):
    """The state store is unreachable, corrupt, or of a schema this version cannot read."""


class EngineError(TierflowError):
    """A database engine call failed.

    `transient` says whether the same call may succeed if tried again later (a timeout, a reset
    connection, a 503); each engine decides it in one place.
    """

    transient: bool = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        #: Seconds the server asked us to wait (`Retry-After` on a 429 or 503), if it said.
        self.retry_after = retry_after


class TransientEngineError(EngineError):
    """A failure worth retrying: the server was unreachable, slow or overloaded."""

    transient = True


class AuthError(EngineError):
    """The server refused the credentials (401 after the token was fetched again, or 403)."""


class QueryError(EngineError):
    """The server refused the query itself (syntax, unknown database, limits): don't retry."""
