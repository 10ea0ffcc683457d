"""A backend's failure as the error the caller sees: the one mapping, for every kind.

The kind of the error decides the caller's status (core/errors.py); what the backend
said is kept as `upstream_status`, which routing reads (a 5xx is worth another try on
the same deployment, a 429 opens its circuit for its Retry-After).
"""

from __future__ import annotations

import re

from aistack.core.errors import ErrorKind, GatewayError

# How servers say a prompt does not fit: Ollama and aistack ("the input length exceeds
# the context length"), llama.cpp ("exceed context window"), vLLM and OpenAI ("maximum
# context length"), OpenRouter, Anthropic ("prompt is too long").
_CONTEXT_OVERFLOW = re.compile(
    r"context (length|window)|maximum context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def upstream_error(
    status: int,
    message: str,
    backend: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
) -> GatewayError:
    """Map a backend's error status (and its words) to the error the caller should see.

    404 and 400 are about the request (the model, a capability) and stay so; anything
    else is the backend's trouble. A prompt too long for the model is marked
    `context_length_exceeded` whatever the backend's wording (or when its `code` says
    so), so the router can send it to a model with a longer context.
    """

    def error(kind: ErrorKind, text: str, code: str | None = None) -> GatewayError:
        return GatewayError(
            kind, text, code=code, backend=backend, upstream_status=status, retry_after=retry_after
        )

    if status in (400, 413, 422) and (
        code == CONTEXT_LENGTH_EXCEEDED or _CONTEXT_OVERFLOW.search(message)
    ):
        return error(ErrorKind.INVALID_REQUEST, message, CONTEXT_LENGTH_EXCEEDED)
    kind = _THE_CALLERS.get(status)
    if kind is not None:
        return error(kind, message)
    # Its own 500, or a 401 to our key: a bad gateway, never the caller's 4xx.
    kind = _THE_BACKENDS.get(status, ErrorKind.UPSTREAM_FAILED)
    return error(kind, f"backend '{backend}' failed: {message}" if backend else message)


# Statuses about the request (the model, a capability): they stay the caller's.
_THE_CALLERS = {
    400: ErrorKind.INVALID_REQUEST,
    404: ErrorKind.NOT_FOUND,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
}
_THE_BACKENDS = {
    429: ErrorKind.UPSTREAM_RATE_LIMITED,
    503: ErrorKind.UPSTREAM_ERROR,
    504: ErrorKind.UPSTREAM_TIMEOUT,
}
