"""Bad input gets a clear 4xx in the caller's dialect, and the server keeps serving.

Unknown fields are the exception by design: real clients send fields nobody documented
(Open WebUI sends `prompt` to /api/embed, OpenRouter apps send `provider`), and Ollama
itself accepts them, so they are accepted here too (the issue listed them among the 4xx
cases; a gateway that rejected them would break those apps).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LOCAL_MODEL

M = LOCAL_MODEL
MSG = [{"role": "user", "content": "hi"}]

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


@pytest.fixture(scope="module")
def http(gw_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw_url, timeout=60) as c:
        yield c


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
        ("GET", "/api/nope", 404, "text/plain"),
        ("GET", "/v1/nope", 404, "application/json"),
        ("GET", "/api/chat", 405, "text/plain"),
        ("DELETE", "/v1/chat/completions", 405, "application/json"),
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
