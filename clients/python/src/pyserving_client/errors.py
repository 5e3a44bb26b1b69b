"""The client's exceptions: one tree, whatever the transport.

    ServingError                 any failed call; `.code` (a gRPC canonical `Code`) and `.message`
     ├── InvalidArgumentError    the request is wrong (bad input, unknown signature, ...)
     ├── NotFoundError           no such model, version or label
     ├── DeadlineExceededError   the call's timeout passed (on the client or the server)
     ├── UnavailableError        server unreachable, shutting down, or answering 503
     ├── UnauthenticatedError    credentials missing or invalid
     ├── PermissionDeniedError   credentials lack the scope
     ├── ResourceExhaustedError  the server refused the load (429)
     ├── FailedPreconditionError the server is not in a state to do it
     └── UnimplementedError      the method or conversion is not supported

The server's message is kept as it was sent: TF Serving's codes and texts, over gRPC
(status code and details) and REST (HTTP status and `{"error": "..."}`). REST folds some
codes into one HTTP status (400 covers INVALID_ARGUMENT, FAILED_PRECONDITION and
OUT_OF_RANGE), so over REST those arrive as the first of them.
"""

from __future__ import annotations

import enum

__all__ = [
    "Code", "ServingError", "InvalidArgumentError", "NotFoundError", "DeadlineExceededError",
    "UnavailableError", "UnauthenticatedError", "PermissionDeniedError", "ResourceExhaustedError",
    "FailedPreconditionError", "UnimplementedError", "error_for", "code_for_http_status",
]


class Code(enum.IntEnum):
    """gRPC's canonical status codes, which TF Serving's errors carry."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """A call failed; `code` says how, `message` is the server's (or the client's) text."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFoundError(ServingError):
    code = Code.NOT_FOUND


class DeadlineExceededError(ServingError):
    code = Code.DEADLINE_EXCEEDED


class UnavailableError(ServingError):
    code = Code.UNAVAILABLE


class UnauthenticatedError(ServingError):
    code = Code.UNAUTHENTICATED


class PermissionDeniedError(ServingError):
    code = Code.PERMISSION_DENIED


class ResourceExhaustedError(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPreconditionError(ServingError):
    code = Code.FAILED_PRECONDITION


class UnimplementedError(ServingError):
    code = Code.UNIMPLEMENTED


_CLASSES: dict[Code, type[ServingError]] = {
    cls.code: cls for cls in (
        InvalidArgumentError, NotFoundError, DeadlineExceededError, UnavailableError,
        UnauthenticatedError, PermissionDeniedError, ResourceExhaustedError,
        FailedPreconditionError, UnimplementedError,
    )
}

# TF Serving's Code -> HTTP table read backwards (where several codes share a status,
# the most common one).
_BY_HTTP_STATUS: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND, 408: Code.DEADLINE_EXCEEDED, 409: Code.ABORTED,
    429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED, 500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED, 502: Code.UNAVAILABLE, 503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def code_for_http_status(status: int) -> Code:
    if status in _BY_HTTP_STATUS:
        return _BY_HTTP_STATUS[status]
    return Code.INVALID_ARGUMENT if 400 <= status < 500 else Code.UNKNOWN


def error_for(code: Code | int, message: str) -> ServingError:
    """The exception of the tree that names `code`."""
    code = Code(code)
    cls = _CLASSES.get(code, ServingError)
    return cls(message, code)
