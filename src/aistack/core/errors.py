"""Errors every layer can raise; each dialect renders them in its own wire shape.

The kind decides the status code (and the error type a dialect shows), and nothing
else does: a 4xx is always the caller's doing, a 5xx never is, and the same failure
answers the same status wherever it is found. What a backend itself answered is kept
beside it (`upstream_status`), for routing and traces, never sent as ours. An error is
immutable once built; a different error is a new one (`GatewayError.but`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(Enum):
    """What went wrong, and the HTTP status that says so."""

    INVALID_REQUEST = ("invalid_request", 400)
    UNAUTHORIZED = ("unauthorized", 401)
    FORBIDDEN = ("forbidden", 403)
    NOT_FOUND = ("not_found", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    REQUEST_TIMEOUT = ("request_timeout", 408)  # its head or body did not arrive in time
    CONFLICT = ("conflict", 409)  # the request is ambiguous here (a model on two boxes)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    HEADERS_TOO_LARGE = ("headers_too_large", 431)
    RATE_LIMITED = ("rate_limited", 429)  # the caller's key is over its limits or budget
    CLIENT_CLOSED = ("client_closed", 499)
    # Ours, not the caller's nor a backend's: the server is stopping and this request
    # ran past its shutdown grace (server.shutdown_grace), so the server ended it.
    SERVER_CUT = ("server_cut", 503)
    INTERNAL = ("internal", 500)
    OVERLOADED = ("overloaded", 503)  # the gateway itself is at a limit (its connection cap)
    # The backend's trouble, never the caller's:
    UPSTREAM_UNREACHABLE = ("upstream_unreachable", 502)  # no connection, or it broke
    UPSTREAM_FAILED = ("upstream_failed", 502)  # it failed, or answered something wrong
    UPSTREAM_ERROR = ("upstream_error", 503)  # it is unavailable or overloaded
    UPSTREAM_RATE_LIMITED = ("upstream_rate_limited", 429)  # it said 429 (Retry-After kept)
    UPSTREAM_TIMEOUT = ("upstream_timeout", 504)

    def __init__(self, _id: str, status: int) -> None:
        self.status = status

    @property
    def upstream(self) -> bool:
        """The backend's trouble (not the caller's, not ours)."""
        return self.name.startswith("UPSTREAM_")


class GatewayError(Exception):
    """An error with a kind (which decides the status), a message for the caller, and
    optional details: the field it is about, a machine-readable code, when to retry,
    and which backend answered what."""

    kind: ErrorKind
    message: str
    param: str | None
    code: str | None
    retry_after: float | None
    backend: str | None
    upstream_status: int | None

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        backend: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        init = super().__setattr__
        init("kind", kind)
        init("message", message)
        init("param", param)
        init("code", code)
        init("retry_after", retry_after)
        init("backend", backend)
        init("upstream_status", upstream_status)

    @property
    def status(self) -> int:
        return self.kind.status

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("__"):  # Python's own: __traceback__, __cause__, __notes__
            super().__setattr__(name, value)
            return
        raise AttributeError(f"a GatewayError is immutable: build another ({name})")

    def _details(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "code": self.code,
            "retry_after": self.retry_after,
            "backend": self.backend,
            "upstream_status": self.upstream_status,
        }

    def but(self, **changes: Any) -> GatewayError:
        """The same error with some details (or its kind, or message) changed: a new one."""
        kind = changes.pop("kind", self.kind)
        message = changes.pop("message", self.message)
        return GatewayError(kind, message, **{**self._details(), **changes})

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.kind, self.message, self._details()))

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.name}, {self.message!r}, status={self.status})"


def _rebuild(kind: ErrorKind, message: str, details: dict[str, Any]) -> GatewayError:
    return GatewayError(kind, message, **details)


def invalid(message: str, param: str | None = None) -> GatewayError:
    """The caller's request is malformed or asks for something impossible."""
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)


class ConfigError(Exception):
    """A configuration problem, already phrased as `file: key: problem`."""
