"""tierflow's exception tree: every error the library raises derives from `TierflowError`.

Every class lives here, and `tierflow` exports them all. Driver errors (aiohttp, sqlite3,
pyarrow, botocore, pydantic) are mapped at the boundary that meets them to the most specific
class below, `raise … from exc`; none escapes a public call.

    TierflowError
    ├── ConfigError                 invalid config: names the file, key and value
    │   └── JobRedefinedError       a job differs from the definition its ledger was recorded with
    ├── UnknownJobError             a job name the config does not define
    ├── InvalidInputError           a wrong argument to a public call (a backward range, …)
    ├── SecretError                 a secret could not be resolved
    ├── TemplateError               a query template failed to load or render
    │   ├── UnsafeQueryError        a rendered query breaks a safety rule
    │   └── FluxSyntaxError         a Flux script is not lexically valid
    ├── StateError                  the state store is unreachable, corrupt or too new
    │   └── StateUnavailableError   the state store cannot be reached now (worth retrying)
    ├── NetworkError                a transport got no (whole) response; the client maps it
    ├── EngineError                 a database call failed (`transient`: worth retrying)
    │   ├── TransientEngineError    unreachable, slow or overloaded: retried
    │   ├── AuthError               the server refused the credentials
    │   ├── QueryError              the server refused the query itself
    │   │   └── FluxResultError     an error table inside a 200 response (2.x)
    │   ├── CircuitOpenError        the connection's circuit is open: nothing was sent
    │   └── WriteRefusedError       points the encoder or the server refused
    ├── LineProtocolError           a name or value line protocol cannot carry (also a ValueError)
    ├── ArchiveError                the archive or its object store failed
    │   ├── ObjectNotFoundError     no object under the key asked for
    │   └── ArchiveMismatchError    the archive holds other counts than the source: not done
    ├── ApplyRefusedError           apply will not run as declared; nothing was changed
    └── ApplyError                  apply failed part-way
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflow._archive import PointBatch

__all__ = [
    "ApplyError",
    "ApplyRefusedError",
    "ArchiveError",
    "ArchiveMismatchError",
    "AuthError",
    "CircuitOpenError",
    "ConfigError",
    "EngineError",
    "FluxResultError",
    "FluxSyntaxError",
    "InvalidInputError",
    "JobRedefinedError",
    "LineProtocolError",
    "NetworkError",
    "ObjectNotFoundError",
    "QueryError",
    "SecretError",
    "StateError",
    "StateUnavailableError",
    "TemplateError",
    "TierflowError",
    "TransientEngineError",
    "UnknownJobError",
    "UnsafeQueryError",
    "WriteRefusedError",
]


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""


class ConfigError(TierflowError):
    """The configuration is invalid; the message names the file, table, key and value."""


class JobRedefinedError(ConfigError):
    """A job's definition differs from the one recorded with its ledger (exit 2)."""


class UnknownJobError(TierflowError):
    """A job name that the config does not define."""


class InvalidInputError(TierflowError):
    """An argument to a public call is wrong: a range whose start is not before its stop, a tier
    that is not live, a bad instant (the CLI exits 2)."""


class SecretError(TierflowError):
    """A secret could not be resolved. The message names the source, never the secret."""


class TemplateError(TierflowError):
    """A query template failed to load or render, or rendered something unsafe."""


class UnsafeQueryError(TemplateError):
    """A rendered query breaks a rule that must hold before it may be sent."""


class FluxSyntaxError(TemplateError):
    """The script is not lexically valid Flux (or uses a construct this tokenizer refuses)."""


class StateError(TierflowError):
    """The state store is unreachable, corrupt, or of a schema this version cannot read."""


class StateUnavailableError(StateError):
    """The state store cannot be reached now (the connection failed or was lost, the server is
    shutting down): the call did nothing, or its transaction's outcome is unknown. Worth trying
    again later; the daemon stops claiming until the store answers."""


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


class NetworkError(TierflowError):
    """No response, or a response cut off: unreachable, reset, timed out. Raised by a transport
    (`tierflow._http.Transport`, e.g. `tierflow.testing.MockTransport`); the HTTP client turns it
    into a `TransientEngineError`. The message says so in a few words and never holds a request's
    headers."""


class TransientEngineError(EngineError):
    """A failure worth retrying: the server was unreachable, slow or overloaded."""

    transient = True


class AuthError(EngineError):
    """The server refused the credentials (401 after the token was fetched again, or 403)."""


class QueryError(EngineError):
    """The server refused the query itself (syntax, unknown database, limits): don't retry."""


class FluxResultError(QueryError):
    """The server reported an error table inside a 200 response."""

    def __init__(self, message: str, reference: str) -> None:
        super().__init__(message)
        self.message = message
        self.reference = reference


class CircuitOpenError(EngineError):
    """The connection's circuit is open: the call was not sent. Not retried now (that is the
    point); the window stays due and runs once the circuit closes."""


class WriteRefusedError(EngineError):
    """A measurement's points that cannot be written: the encoder or the server refused them.
    The message names the measurement, the field (or tag) at fault where known, and the time
    of the first offending point."""

    def __init__(
        self,
        message: str,
        *,
        measurement: str,
        column: str | None,
        time_ns: int,
        reason: str,
        status: int | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.measurement = measurement
        self.column = column
        self.time_ns = time_ns
        self.reason = reason

    @classmethod
    def of(
        cls,
        measurement: str,
        batch: PointBatch,
        column: str | None,
        row: int,
        cause: Exception,
        *,
        exact: bool = True,
    ) -> WriteRefusedError:
        """The refusal of `batch`'s `row` (`exact`), or of a body starting at that row (when the
        server did not say which point it refused)."""
        from tierflow._lineprotocol import ns_isoformat, point_ns  # pyarrow: only when refused

        kind = "tag" if column in {batch.key(name) for name in batch.tags} else "field"
        at = f"{kind} {column!r}, " if column is not None else ""
        time_ns = point_ns(batch.data, row)
        where = "first offending point at" if exact else "a body of points from"
        error = cls(
            f"measurement {measurement!r}, {at}{where} {ns_isoformat(time_ns)}: {cause}",
            measurement=measurement,
            column=column,
            time_ns=time_ns,
            reason=str(cause),
            status=getattr(cause, "status", None),
        )
        error.__cause__ = cause
        return error


class LineProtocolError(TierflowError, ValueError):
    """A name or value that line protocol cannot carry (a newline in a name or tag value, a
    stranded backslash, a line longer than a body may be). `column` names the tag or field at
    fault (None for the measurement itself) and `row` the first offending row of the batch."""

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = 0 if row is None else row
        #: Whether `row` names the offending value itself (else the column's first value).
        self.pinned = row is not None


class ArchiveError(TierflowError):
    """The archive or its object store failed: unreachable, refused, corrupt, or given points it
    cannot hold (outside the window, a name used both as a tag and a field)."""


class ObjectNotFoundError(ArchiveError):
    """The object store holds no object under the key asked for."""


class ArchiveMismatchError(ArchiveError):
    """The archive holds a different number of values than the source: the window is not done
    (nothing was committed). The runner records it as a failed attempt, like a refused query:
    never retried on the spot, counted towards parking."""


class ApplyRefusedError(TierflowError):
    """Apply will not run as declared; nothing was changed. The message lists every reason."""


class ApplyError(TierflowError):
    """A change failed part-way; those before it were made (apply again once it is fixed)."""
