"""One HTTP layer for every engine: transport, credentials, limits, metrics, one error table."""

from tierflow._http._auth import AuthProvider, BasicAuth, NoAuth, TokenAuth
from tierflow._http._client import ANY_STATUS, Body, HeaderHook, HttpClient, Reply, json_or_none
from tierflow._http._status import (
    ErrorTable,
    KnownError,
    recognise,
    retry_after_seconds,
    server_message,
    with_fix,
)
from tierflow._http._transport import (
    AiohttpTransport,
    HttpRequest,
    HttpResponse,
    NetworkError,
    Timeouts,
    Transport,
    describe_failure,
)

__all__ = [
    "ANY_STATUS",
    "AiohttpTransport",
    "AuthProvider",
    "BasicAuth",
    "Body",
    "ErrorTable",
    "HeaderHook",
    "HttpClient",
    "HttpRequest",
    "HttpResponse",
    "KnownError",
    "NetworkError",
    "NoAuth",
    "Reply",
    "Timeouts",
    "TokenAuth",
    "Transport",
    "describe_failure",
    "json_or_none",
    "recognise",
    "retry_after_seconds",
    "server_message",
    "with_fix",
]
