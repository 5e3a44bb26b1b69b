"""Canonical error codes, the one exception type the serving layers raise, and the one
that stops the server from starting.

`Code` mirrors the gRPC canonical status codes (and TF's `error::Code`), so the gRPC front
end maps by identity and the REST front end uses one table (`api/rest/errors.py`).
Core, platforms and services raise `ServingError(code, message)`; front ends never
invent codes of their own. `StartupError` is raised by whichever layer finds the server
cannot start (a port, a config file, TLS material); the command line turns it into the exit
status.
"""

from __future__ import annotations

import enum

__all__ = ["Code", "ServingError", "RequestTooLargeError", "StartupError"]


class Code(enum.IntEnum):
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
    """An error with a canonical `code` and a message meant for the client."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class RequestTooLargeError(ServingError):
    """RESOURCE_EXHAUSTED for a request that could never be served, whatever else is in
    flight (REST answers 413, not 429: retrying cannot help)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, message)


class StartupError(Exception):
    """The server cannot start; the message is printed and the process exits with 255, as
    TF Serving's does (`return -1` from main), whatever the cause."""

    def __init__(self, message: str, exit_code: int = 255) -> None:
        super().__init__(message)
        self.exit_code = exit_code
