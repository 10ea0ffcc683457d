"""Errors every layer can raise; each dialect renders them in its own wire shape.

The kind decides the status code and the error type a dialect shows, so a backend
failure and a caller's mistake can never be confused: a 4xx is always the caller's
doing, a 5xx never is.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    """What went wrong, with the HTTP status that says so."""

    INVALID_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    PAYLOAD_TOO_LARGE = 413
    RATE_LIMITED = 429
    CLIENT_CLOSED = 499
    INTERNAL = 500
    UPSTREAM_UNREACHABLE = 502
    UPSTREAM_ERROR = 503
    UPSTREAM_TIMEOUT = 504

    @property
    def status(self) -> int:
        return self.value


class GatewayError(Exception):
    """An error with a status, a message for the caller, and optional details.

    `status` defaults to the kind's status; an upstream error keeps the status
    the backend gave when it is meaningful to the caller (404, 400, 429).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else kind.status
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.backend = backend

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.name}, {self.message!r}, status={self.status})"


def invalid(message: str, param: str | None = None) -> GatewayError:
    """The caller's request is malformed or asks for something impossible."""
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)
