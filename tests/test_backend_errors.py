"""How backend answers become errors the router can act on: which ones say the prompt
is too long (so a longer-context model can take it), and when to come back after a 429."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from aistack.backends.errors import upstream_error
from aistack.backends.http import parse_retry_after
from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.openai.convert import error_code_from_wire

TOO_LONG = [
    # aistack's embedded engine, through an aistack upstream (Ollama dialect)
    (400, "the input length (5000 tokens) exceeds the context length (4096 tokens)"),
    # Ollama
    (400, "input length exceeds the context length"),
    # llama.cpp's server and llama-cpp-python
    (400, "Requested tokens (5000) exceed context window of 4096"),
    # vLLM and OpenAI
    (400, "This model's maximum context length is 4096 tokens. However, you requested 5000"),
    # OpenRouter
    (400, "This endpoint's maximum context length is 131072 tokens."),
    # Anthropic, through an OpenAI-compatible proxy
    (400, "prompt is too long: 210000 tokens > 200000 maximum"),
    (413, "Too many tokens in the request"),
]


@pytest.mark.parametrize(("status", "message"), TOO_LONG)
def test_every_wording_of_a_prompt_too_long_is_marked(status: int, message: str) -> None:
    e = upstream_error(status, message, "box")
    assert e.code == "context_length_exceeded" and e.kind is ErrorKind.INVALID_REQUEST


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "invalid think value"),
        (500, "the context length is exceeded somewhere inside"),  # a 5xx stays a 5xx
        (404, "model 'x' not found"),
    ],
)
def test_other_errors_are_not_mistaken_for_a_prompt_too_long(status: int, message: str) -> None:
    assert upstream_error(status, message, "box").code is None


@pytest.mark.parametrize(
    ("upstream", "kind", "status"),
    [
        (400, ErrorKind.INVALID_REQUEST, 400),
        (404, ErrorKind.NOT_FOUND, 404),
        (413, ErrorKind.PAYLOAD_TOO_LARGE, 413),
        (422, ErrorKind.INVALID_REQUEST, 400),
        (429, ErrorKind.UPSTREAM_RATE_LIMITED, 429),
        # Our key refused, a method it lacks: the backend's trouble, never the caller's 4xx.
        (401, ErrorKind.UPSTREAM_FAILED, 502),
        (403, ErrorKind.UPSTREAM_FAILED, 502),
        (405, ErrorKind.UPSTREAM_FAILED, 502),
        (500, ErrorKind.UPSTREAM_FAILED, 502),
        (502, ErrorKind.UPSTREAM_FAILED, 502),
        (503, ErrorKind.UPSTREAM_ERROR, 503),
        (504, ErrorKind.UPSTREAM_TIMEOUT, 504),
        (200, ErrorKind.UPSTREAM_FAILED, 502),  # an error body on a 200
    ],
)
def test_a_backend_status_maps_to_one_kind_and_the_kind_decides_the_callers_status(
    upstream: int, kind: ErrorKind, status: int
) -> None:
    e = upstream_error(upstream, "no", "box", retry_after=3.0)
    assert (e.kind, e.status, e.upstream_status) == (kind, status, upstream)
    assert e.backend == "box" and e.retry_after == 3.0
    assert (e.status < 500) == (kind in (ErrorKind.INVALID_REQUEST, ErrorKind.NOT_FOUND,
                                         ErrorKind.PAYLOAD_TOO_LARGE,
                                         ErrorKind.UPSTREAM_RATE_LIMITED))  # fmt: skip


def test_an_error_is_immutable_and_a_changed_one_is_another() -> None:
    e = GatewayError(ErrorKind.UPSTREAM_ERROR, "busy", backend="box")
    with pytest.raises(AttributeError, match="immutable"):
        e.retry_after = 5  # type: ignore[misc]
    later = e.but(retry_after=5.0)
    assert later is not e and later.retry_after == 5.0 and e.retry_after is None
    assert (later.kind, later.message, later.backend) == (e.kind, e.message, e.backend)
    # Python's own bookkeeping (tracebacks, causes, notes) still works.
    try:
        raise e from ValueError("x")
    except GatewayError as caught:
        caught.add_note("seen")
        assert caught.__cause__ is not None and caught.__notes__ == ["seen"]


def test_an_openai_error_code_is_read_from_the_body() -> None:
    body = {"error": {"message": "too long", "code": "context_length_exceeded"}}
    assert error_code_from_wire(body) == "context_length_exceeded"
    assert error_code_from_wire({"error": "plain"}) is None
    assert error_code_from_wire("not json") is None


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    later = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 < later <= 30
    assert parse_retry_after("soon") is None
