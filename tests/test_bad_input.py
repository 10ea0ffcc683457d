"""Bad input gets a clear 4xx in the caller's dialect, and the server keeps serving.

Unknown fields are the exception by design: real clients send fields nobody documented
(Open WebUI sends `prompt` to /api/embed, OpenRouter apps send `provider`), and Ollama
itself accepts them, so they are accepted here too (the issue listed them among the 4xx
cases; a gateway that rejected them would break those apps).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import CLAUDE_MODEL, LLAMACPP_MODEL, LOCAL_MODEL, UPSTREAM_MODEL
from tests.procs import running, start_gateway

M = LOCAL_MODEL
MSG = [{"role": "user", "content": "hi"}]
# One model per backend kind: the embedded engine, llama.cpp's server (openai), another
# aistack (ollama) and an Anthropic-speaking one. A request to any of them is read, and
# refused, before its backend sees it.
EVERY_KIND = [LOCAL_MODEL, LLAMACPP_MODEL, UPSTREAM_MODEL, CLAUDE_MODEL]


def _nested(levels: int) -> dict[str, object]:
    """An object `levels` levels deep (counting itself)."""
    v: dict[str, object] = {}
    for _ in range(levels - 1):
        v = {"properties": v}
    return v


# (path, body, status, words the message must contain)
OLLAMA_CASES: list[tuple[str, object, int, str]] = [
    ("/api/chat", b"", 400, "missing request body"),
    ("/api/chat", b"{not json", 400, "invalid JSON"),
    ("/api/chat", b"[1, 2]", 400, "expected a JSON object"),
    ("/api/chat", {"messages": MSG}, 400, "model is required"),
    ("/api/chat", {"model": 5, "messages": MSG}, 400, "'model'"),
    ("/api/chat", {"model": M, "messages": "hi"}, 400, "'messages'"),
    ("/api/chat", {"model": M, "messages": [{"content": "x"}]}, 400, "role"),
    ("/api/chat", {"model": M, "messages": MSG, "stream": "yes"}, 400, "'stream'"),
    ("/api/chat", {"model": M, "messages": MSG, "options": {"num_ctx": "8k"}}, 400, "num_ctx"),
    ("/api/chat", {"model": M, "messages": MSG, "options": {"stop": 3}}, 400, "stop"),
    ("/api/chat", {"model": M, "messages": MSG, "keep_alive": "300"}, 400, "missing unit"),
    ("/api/chat", {"model": M, "messages": MSG, "think": "maybe"}, 400, "invalid think"),
    ("/api/chat", {"model": M, "messages": MSG, "format": "xml"}, 400, "invalid format"),
    ("/api/chat", {"model": "bad:", "messages": MSG}, 400, "invalid model name"),
    ("/api/chat", {"model": "nope", "messages": MSG}, 404, "not found"),
    ("/api/generate", {"model": M, "prompt": 5}, 400, "'prompt'"),
    ("/api/generate", {"model": M, "raw": True, "system": "x", "prompt": "p"}, 400, "raw mode"),
    ("/api/embed", {"model": M, "input": 5}, 400, "invalid input type"),
    ("/api/embed", {"model": M, "input": "x", "dimensions": -1}, 400, "dimensions"),
    ("/api/show", {}, 400, "model is required"),
    ("/api/show", {"model": "nope"}, 404, "not found"),
]

OPENAI_CASES: list[tuple[str, object, int, str]] = [
    ("/v1/chat/completions", b"", 400, "missing request body"),
    ("/v1/chat/completions", b"{not json", 400, "invalid JSON"),
    ("/v1/chat/completions", {"messages": MSG}, 400, "model is required"),
    ("/v1/chat/completions", {"model": M}, 400, "'messages' is required"),
    ("/v1/chat/completions", {"model": M, "messages": []}, 400, "too short"),
    ("/v1/chat/completions", {"model": M, "messages": [{"role": "robot"}]}, 400, "role"),
    ("/v1/chat/completions", {"model": M, "messages": MSG, "temperature": "hot"}, 400, "temp"),
    ("/v1/chat/completions", {"model": M, "messages": MSG, "stop": 5}, 400, "'stop'"),
    ("/v1/chat/completions", {"model": M, "messages": MSG, "n": 2}, 400, "n=1"),
    ("/v1/chat/completions", {"model": M, "messages": MSG, "tool_choice": 1}, 400, "tool_choice"),
    (
        "/v1/chat/completions",
        {"model": M, "messages": MSG, "response_format": {"type": "yaml"}},
        400,
        "response_format",
    ),
    (
        "/v1/chat/completions",
        {"model": M, "messages": MSG, "reasoning_effort": "extreme"},
        400,
        "reasoning_effort",
    ),
    (
        "/v1/chat/completions",
        {
            "model": M,
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
                }
            ],
        },
        400,
        "invalid tool call arguments",
    ),
    ("/v1/chat/completions", {"model": "nope", "messages": MSG}, 404, "not found"),
    ("/v1/completions", {"model": M, "prompt": [1, 2, 3]}, 400, "token arrays"),
    ("/v1/embeddings", {"model": M}, 400, "'input' is required"),
    ("/v1/embeddings", {"model": M, "input": "x", "encoding_format": "hex"}, 400, "encoding"),
]


# Numbers no backend takes: integers beyond 64 bits (JSON has no integer size; `1e30` is
# integral) and values below a field's minimum. (path, body with {m} for the model, the
# field the 400 must name)
OUT_OF_RANGE: list[tuple[str, dict[str, object], str]] = [
    ("/api/chat", {"messages": MSG, "options": {"num_predict": 1e308}}, "options.num_predict"),
    ("/api/chat", {"messages": MSG, "options": {"seed": 1e20}}, "options.seed"),
    ("/api/chat", {"messages": MSG, "options": {"top_k": -1e30}}, "options.top_k"),
    ("/api/chat", {"messages": MSG, "options": {"num_ctx": 2**64 - 1}}, "options.num_ctx"),
    ("/api/chat", {"messages": MSG, "keep_alive": 1e30}, "keep_alive"),
    ("/api/chat", {"messages": MSG, "keep_alive": "99999999999h"}, "keep_alive"),
    ("/api/generate", {"prompt": "hi", "options": {"num_predict": 1e30}}, "options.num_predict"),
    ("/api/embed", {"input": "x", "dimensions": 1e20}, "dimensions"),
    ("/v1/chat/completions", {"messages": MSG, "max_tokens": 1e30}, "max_tokens"),
    ("/v1/chat/completions", {"messages": MSG, "max_tokens": 0}, "max_tokens"),
    (
        "/v1/chat/completions",
        {"messages": MSG, "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    ("/v1/chat/completions", {"messages": MSG, "seed": 1e20}, "seed"),
    ("/v1/chat/completions", {"messages": MSG, "seed": -(2**64) + 1}, "seed"),
    ("/v1/chat/completions", {"messages": MSG, "top_k": 1e30}, "top_k"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 1e30}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "seed": 1e20}, "seed"),
    ("/v1/embeddings", {"input": "x", "dimensions": 1e20}, "dimensions"),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 1e30}, "max_output_tokens"),
    ("/v1/messages", {"max_tokens": 1e30, "messages": MSG}, "max_tokens"),
    ("/v1/messages", {"max_tokens": 5, "top_k": 1e30, "messages": MSG}, "top_k"),
    ("/v1/messages/count_tokens", {"max_tokens": 1e30, "messages": MSG}, "max_tokens"),
]

# Messages of the wrong shape: (path, messages or input, the field the 400 names).
MALFORMED_MESSAGES: list[tuple[str, object, str]] = [
    ("/api/chat", [{"role": ["user"], "content": "x"}], "messages[0].role"),
    ("/api/chat", [{"role": "user", "content": ["x"]}], "messages[0].content"),
    ("/api/chat", [{"content": "x", "images": []}], "messages[0].role"),
    ("/api/chat", ["hi"], "messages[0]"),
    ("/v1/chat/completions", [{"role": ["user"], "content": "x"}], "messages[0].role"),
    ("/v1/chat/completions", [{"role": {"a": 1}, "content": "x"}], "messages[0].role"),
    ("/v1/chat/completions", [{"role": "user", "content": 5}], "messages[0].content"),
    ("/v1/chat/completions", [{"content": "x"}], "messages[0].role"),
    ("/v1/responses", [{"role": ["user"], "content": "x"}], "input[0].role"),
    ("/v1/responses", [{"role": "user", "content": 5}], "input[0].content"),
    ("/v1/messages", [{"role": ["user"], "content": "x"}], "messages[0].role"),
    ("/v1/messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("/v1/messages", [{"content": "x"}], "messages[0].role"),
    ("/v1/messages/count_tokens", [{"role": ["user"], "content": "x"}], "messages[0].role"),
]

# A schema (or any value) nested 300 levels deep: a 400 naming the top-level field.
DEEP = _nested(300)
TOO_DEEP: list[tuple[str, dict[str, object], str]] = [
    ("/api/chat", {"messages": MSG, "format": DEEP}, "format"),
    ("/api/generate", {"prompt": "hi", "format": DEEP}, "format"),
    ("/api/chat", {"messages": MSG, "options": {"x": DEEP}}, "options"),
    (
        "/v1/chat/completions",
        {
            "messages": MSG,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": DEEP},
            },
        },
        "response_format",
    ),
    (
        "/v1/chat/completions",
        {
            "messages": MSG,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP}}],
        },
        "tools",
    ),
    (
        "/v1/completions",
        {
            "prompt": "hi",
            "response_format": {"type": "json_schema", "json_schema": {"schema": DEEP}},
        },
        "response_format",
    ),
    (
        "/v1/responses",
        {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": DEEP}}},
        "text",
    ),
    (
        "/v1/messages",
        {
            "max_tokens": 5,
            "messages": MSG,
            "output_config": {"format": {"type": "json_schema", "schema": DEEP}},
        },
        "output_config",
    ),
    ("/v1/messages", {"max_tokens": 5, "messages": MSG, "metadata": DEEP}, "metadata"),
]


def _error_of(path: str, r: httpx.Response) -> tuple[str, str | None]:
    """The error's message (and param, where the dialect has one), checking its shape."""
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return body["error"], None
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        return body["error"]["message"], None
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert err["type"] == "invalid_request_error", body
    return err["message"], err["param"]


@pytest.mark.parametrize("model", EVERY_KIND)
@pytest.mark.parametrize(("path", "body", "field"), OUT_OF_RANGE)
def test_out_of_range_numbers_are_400_naming_the_field(
    http: httpx.Client, model: str, path: str, body: dict[str, object], field: str
) -> None:
    r = http.post(path, json={"model": model, **body})
    assert r.status_code == 400, r.text
    message, param = _error_of(path, r)
    assert f"'{field}'" in message, message
    assert param in (None, field)
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(("path", "messages", "field"), MALFORMED_MESSAGES)
def test_malformed_messages_are_400_naming_the_field(
    http: httpx.Client, path: str, messages: object, field: str
) -> None:
    key = "input" if path == "/v1/responses" else "messages"
    r = http.post(path, json={"model": M, "max_tokens": 5, key: messages})
    assert r.status_code == 400, r.text
    message, param = _error_of(path, r)
    assert field in message, message
    assert param in (None, field)
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(("path", "body", "field"), TOO_DEEP)
def test_json_nested_beyond_the_limit_is_400_naming_the_field(
    http: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    r = http.post(path, json={"model": M, **body})
    assert r.status_code == 400, r.text
    message, param = _error_of(path, r)
    assert f"'{field}'" in message and "nested too deeply" in message, message
    assert param in (None, field)
    assert http.get("/").status_code == 200


def test_a_schema_within_the_nesting_limit_is_accepted(http: httpx.Client) -> None:
    # 64 levels in all: the body, `format`, and the schema's 62 below it.
    r = http.post(
        "/api/chat",
        json={"model": "nope-not-here", "messages": MSG, "format": _nested(63)},
    )
    assert r.status_code == 404, r.text  # read whole, then routed: no such model
    r = http.post(
        "/api/chat",
        json={"model": "nope-not-here", "messages": MSG, "format": _nested(64)},
    )
    assert r.status_code == 400, r.text


# Empty inputs, as the real APIs answer them: Ollama loads the model for no input at all;
# OpenAI refuses an empty embedding input; nobody embeds an empty text.
EMPTY_INPUTS: list[tuple[str, dict[str, object], int, str]] = [
    ("/api/embed", {"input": ""}, 200, ""),
    ("/api/embed", {"input": []}, 200, ""),
    ("/api/embed", {"input": [""]}, 400, "input[0]"),
    ("/api/embed", {"input": ["x", ""]}, 400, "input[1]"),
    ("/api/embeddings", {"prompt": ""}, 200, ""),
    ("/v1/embeddings", {"input": ""}, 400, "input"),
    ("/v1/embeddings", {"input": [""]}, 400, "input[0]"),
    ("/v1/embeddings", {"input": []}, 400, "input"),
    ("/api/generate", {"prompt": "", "stream": False}, 200, "load"),
    ("/api/generate", {"prompt": None, "stream": False}, 200, "load"),
    ("/api/generate", {"prompt": "", "raw": True, "stream": False}, 200, "load"),
    ("/api/chat", {"messages": [], "stream": False}, 200, "load"),
]


@pytest.mark.parametrize(
    ("model", "path", "body", "status", "words"),
    [
        (model, *case)
        for model in EVERY_KIND
        for case in EMPTY_INPUTS
        # An Anthropic backend has no embeddings: nothing to ask it.
        if not (model == CLAUDE_MODEL and "embed" in case[0])
    ],
)
def test_empty_inputs_are_answered_as_the_real_apis_do(
    http: httpx.Client, model: str, path: str, body: dict[str, object], status: int, words: str
) -> None:
    r = http.post(path, json={"model": model, **body})
    assert r.status_code == status, r.text
    if status != 200:
        message, _ = _error_of(path, r)
        assert words in message, message
    elif path == "/api/embed":
        assert r.json()["embeddings"] == []
    elif path == "/api/embeddings":
        assert r.json() == {"embedding": []}
    else:
        assert r.json()["done_reason"] == words, r.text
    assert http.get("/").status_code == 200


@pytest.fixture(scope="module")
def http(gw_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw_url, timeout=60) as c:
        _wait_until_every_kind_answers(c)
        yield c


def _wait_until_every_kind_answers(c: httpx.Client) -> None:
    """The shared gateway may hold a backend in its cooldown when this module starts
    (test_backend_matrix makes llama.cpp's server fail on purpose): these tests are about
    answers to bad input, so they start once every kind answers a good request again."""
    deadline = time.monotonic() + 240
    waiting = list(EVERY_KIND)
    while waiting:
        r = c.post(
            "/api/generate",
            json={"model": waiting[0], "prompt": "Hi", "stream": False,
                  "options": {"num_predict": 1}},
        )  # fmt: skip
        if r.status_code == 200:
            waiting.pop(0)
            continue
        assert time.monotonic() < deadline, f"{waiting[0]} never answered again: {r.text}"
        time.sleep(0.5)


def _post(http: httpx.Client, path: str, body: object) -> httpx.Response:
    if isinstance(body, bytes):
        # curl -d sends this content type; the body is JSON all the same.
        return http.post(
            path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    return http.post(path, json=body)


@pytest.mark.parametrize(("path", "body", "status", "words"), OLLAMA_CASES)
def test_ollama_dialect_errors(
    http: httpx.Client, path: str, body: object, status: int, words: str
) -> None:
    r = _post(http, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert set(err) == {"error"} and isinstance(err["error"], str)
    assert words in err["error"]
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(("path", "body", "status", "words"), OPENAI_CASES)
def test_openai_dialect_errors(
    http: httpx.Client, path: str, body: object, status: int, words: str
) -> None:
    r = _post(http, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert words in err["message"]
    assert http.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_body_over_the_limit_is_413_in_the_dialect(http: httpx.Client, path: str) -> None:
    big = {"model": M, "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    r = http.post(path, json=big)
    assert r.status_code == 413
    body = r.json()
    msg = body["error"] if path.startswith("/api") else body["error"]["message"]
    assert "too large" in msg and "max_body_bytes" in msg
    assert http.get("/").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/chat",
            {
                "model": M,
                "messages": MSG,
                "stream": False,
                "options": {"num_predict": 2, "mirostat": 0, "penalize_newline": True},
                "metadata": {"chat": 1},
                "logprobs": False,
            },
        ),
        ("/api/embed", {"model": M, "input": "x", "prompt": "x"}),
        (
            "/v1/chat/completions",
            {
                "model": M,
                "messages": MSG,
                "max_tokens": 2,
                "provider": {"order": ["a"]},
                "transforms": [],
                "x_unknown": True,
            },
        ),
    ],
)
def test_unknown_fields_are_accepted(http: httpx.Client, path: str, body: object) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path", "status", "ctype"),
    [
        ("GET", "/api/nope", 404, "application/json"),  # {"error": "404 page not found"}
        ("GET", "/v1/nope", 404, "application/json"),
        ("GET", "/api/chat", 405, "application/json"),  # {"error": "405 method not allowed..."}
        ("DELETE", "/v1/chat/completions", 405, "application/json"),
        ("GET", "/chat/completions", 404, "text/plain"),  # outside every API: Ollama's own
    ],
)
def test_wrong_routes_and_methods(
    http: httpx.Client, method: str, path: str, status: int, ctype: str
) -> None:
    r = http.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(ctype)


def test_double_slashes_and_trailing_slashes_still_route(gw_url: str) -> None:
    # Clients joining a base URL that ends in '/' send these.
    assert httpx.get(f"{gw_url}//api/tags").status_code == 200
    assert httpx.get(f"{gw_url}/v1/models/").status_code == 200


def test_head_root_says_ollama_is_running(http: httpx.Client) -> None:
    assert http.head("/").status_code == 200
    assert http.get("/").text == "Ollama is running"


# ---------------------------------------------------------------------------------------
# The embedded engine: what llama.cpp is never handed. A gateway of its own, with a short
# context (256 tokens) and room for a 20 MB body, so that the context's bounds are quick
# to reach and a failure here cannot open the shared gateway's circuits.

SHORT_CTX = 256


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    cfg = {
        "server": {"max_body_bytes": 32_000_000},
        "backends": [{"name": "local", "kind": "local", "n_ctx": SHORT_CTX, "n_threads": 1}],
    }
    with (
        running(start_gateway(tmp_path_factory.mktemp("engine"), cfg, name="engine")) as gw,
        httpx.Client(base_url=gw.url, timeout=300) as c,
    ):
        yield c


def _with_schema(path: str, schema: dict[str, object]) -> dict[str, object]:
    """A request on `path` whose JSON format is `schema`."""
    js = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return {
        "/api/chat": {"messages": MSG, "format": schema, "stream": False},
        "/api/generate": {"prompt": "hi", "format": schema, "stream": False},
        "/v1/chat/completions": {"messages": MSG, "response_format": js, "max_tokens": 8},
        "/v1/completions": {"prompt": "hi", "response_format": js, "max_tokens": 8},
        "/v1/responses": {
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}},
        },
        "/v1/messages": {
            "messages": MSG,
            "max_tokens": 8,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        },
    }[path]


# Where each dialect holds the schema: what the 400 names.
SCHEMA_FIELD = {
    "/api/chat": "format",
    "/api/generate": "format",
    "/v1/chat/completions": "response_format.json_schema.schema",
    "/v1/completions": "response_format.json_schema.schema",
    "/v1/responses": "text.format.schema",
    "/v1/messages": "output_config.format.schema",
}

# Schemas llama-cpp-python's grammar converter refuses (an AssertionError, a ValueError),
# that llama.cpp cannot parse (a NULL sampler, which crashed at the first token), or
# whose grammar nests deep enough to overflow llama.cpp's parser (a SIGSEGV).
UNUSABLE_SCHEMAS: list[dict[str, object]] = [
    {"type": "wat"},
    {"$ref": "#"},
    {"type": "string", "pattern": "a+"},
    {"$ref": "#/definitions/nowhere"},
    {"type": "array", "items": {"type": "wat"}},
    {"enum": []},
    {"type": "string", "maxLength": 100_000},
]


@pytest.mark.parametrize("schema", UNUSABLE_SCHEMAS, ids=lambda s: str(s)[:40])
@pytest.mark.parametrize("path", list(SCHEMA_FIELD))
def test_an_unusable_schema_is_400_naming_the_field_on_the_embedded_engine(
    engine: httpx.Client, path: str, schema: dict[str, object]
) -> None:
    r = engine.post(path, json={"model": M, **_with_schema(path, schema)})
    assert r.status_code == 400, r.text
    message, param = _error_of(path, r)
    field = SCHEMA_FIELD[path]
    assert f"'{field}'" in message and "schema" in message, message
    assert param in (None, field)
    assert engine.get("/").status_code == 200


def test_an_unusable_tool_schema_is_400_naming_tools(engine: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "wat"}}}
    r = engine.post("/v1/chat/completions", json={"model": M, "messages": MSG, "tools": [tool]})
    assert r.status_code == 400, r.text
    message, param = _error_of("/v1/chat/completions", r)
    assert "'tools'" in message and param == "tools", message


def test_unusable_schemas_through_the_official_clients_are_their_400s(
    engine: httpx.Client,
) -> None:
    import anthropic
    import ollama
    import openai

    url = str(engine.base_url).rstrip("/")
    with pytest.raises(ollama.ResponseError) as oe:
        ollama.Client(host=url).chat(model=M, messages=MSG, format={"$ref": "#"})
    assert oe.value.status_code == 400 and "'format'" in str(oe.value.error)
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ae:
        oa.chat.completions.create(
            model=M,
            messages=MSG,  # type: ignore[arg-type]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "wat"}},
            },
        )
    assert ae.value.param == "response_format.json_schema.schema"
    an = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as ne:
        an.messages.create(
            model=M,
            max_tokens=8,
            messages=MSG,  # type: ignore[arg-type]
            extra_body={
                "output_config": {"format": {"type": "json_schema", "schema": {"pattern": "a+"}}}
            },
        )
    assert "output_config.format.schema" in str(ne.value)


def test_caller_errors_never_open_the_embedded_engines_circuit(engine: httpx.Client) -> None:
    # The circuit opens after 3 consecutive failures of the backend's own (routing
    # defaults); caller errors are none of those, however many there are.
    for path in ("/api/chat", "/v1/chat/completions", "/v1/messages") * 3:
        r = engine.post(path, json={"model": M, **_with_schema(path, {"type": "wat"})})
        assert r.status_code == 400, r.text
        r = engine.post(
            "/api/chat",
            json={"model": M, "messages": MSG, "options": {"num_predict": 0}, "stream": False},
        )
        assert r.status_code == 400, r.text
    good = engine.post(
        "/api/chat",
        json={"model": M, "messages": MSG, "options": {"num_predict": 2}, "stream": False},
    )
    assert good.status_code == 200, good.text
    assert good.headers["x-aistack-backend"] == "local"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/chat", {"messages": MSG, "options": {"num_predict": 0}}, "options.num_predict"),
        ("/api/generate", {"prompt": "hi", "options": {"num_predict": 0}}, "options.num_predict"),
    ],
)
def test_no_tokens_asked_for_is_400_on_the_embedded_engine(
    engine: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    # It was "no limit": generation until the context was full, no bytes meanwhile.
    r = engine.post(path, json={"model": M, "stream": False, **body})
    assert r.status_code == 400, r.text
    message, _ = _error_of(path, r)
    assert f"'{field}'" in message and "at least 1" in message, message


@pytest.mark.parametrize("num_predict", [10**15, -1, -2, None])
def test_generation_is_bounded_by_the_context(
    engine: httpx.Client, num_predict: int | None
) -> None:
    options: dict[str, object] = {"temperature": 0, "stop": []}
    if num_predict is not None:
        options["num_predict"] = num_predict
    r = engine.post(
        "/api/generate",
        json={
            "model": M,
            "raw": True,
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
            "options": options,
            "stream": False,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt_eval_count"] + body["eval_count"] <= SHORT_CTX, body
    if body["done_reason"] == "length":
        assert body["prompt_eval_count"] + body["eval_count"] >= SHORT_CTX - 1, body


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/v1/completions"])
def test_a_prompt_far_beyond_the_context_is_refused_from_its_size(
    engine: httpx.Client, path: str
) -> None:
    # 20 MB: tokenizing it took 11-21 s of the engine's one thread before the 400. Its
    # size alone shows it cannot fit (every token is at most the vocabulary's longest).
    text = "lorem ipsum " * 1_700_000
    body = (
        {"prompt": text}
        if path == "/v1/completions"
        else {"messages": [{"role": "user", "content": text}]}
    )
    r = engine.post(path, json={"model": M, "stream": False, **body})
    assert r.status_code == 400, r.text
    message, _ = _error_of(path, r)
    assert "exceeds the context length" in message and "at least" in message, message
    if path.startswith("/v1"):
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_an_embedding_input_far_beyond_the_context_is_cut_or_refused_from_its_size(
    engine: httpx.Client,
) -> None:
    text = "lorem ipsum " * 1_700_000
    r = engine.post("/api/embed", json={"model": M, "input": text, "truncate": False})
    assert r.status_code == 400, r.text
    assert "exceeds the context length" in r.json()["error"]
    r = engine.post("/api/embed", json={"model": M, "input": [text, "x"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["embeddings"]) == 2
    assert body["prompt_eval_count"] <= SHORT_CTX + 2


def test_an_empty_completion_prompt_starts_from_the_beginning_of_a_text(
    engine: httpx.Client,
) -> None:
    # OpenAI's completions take an empty prompt; llama.cpp cannot decode no tokens.
    r = engine.post("/v1/completions", json={"model": M, "prompt": "", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 1
    r = engine.post("/v1/completions", json={"model": M, "prompt": None, "max_tokens": 3})
    assert r.status_code == 200, r.text
