"""The official `anthropic` client (pinned in the test extra) against `aistack serve`.

Messages over every backend kind, streamed both ways the SDK streams, a tool-use round
trip, count_tokens, the model list in Anthropic's format, errors raised as the client's
own exception classes, and the request Claude Code actually sends.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import anthropic
import pytest

from tests.conftest import CLAUDE_MODEL, LOCAL_MODEL, UPSTREAM_MODEL

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", timeout=120, max_retries=0)


def test_a_message_without_a_system_prompt(gw_url: str) -> None:
    m = client(gw_url).messages.create(
        model=LOCAL_MODEL, max_tokens=12, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert m.type == "message" and m.role == "assistant" and m.model == LOCAL_MODEL
    assert m.content[0].type == "text" and m.content[0].text.strip()
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@pytest.mark.parametrize(
    "system",
    ["You answer in one word.", [{"type": "text", "text": "You answer in one word."}]],
    ids=["string", "blocks"],
)
def test_a_message_with_a_system_prompt(gw_url: str, system: Any) -> None:
    m = client(gw_url).messages.create(
        model=LOCAL_MODEL,
        max_tokens=8,
        system=system,
        messages=[{"role": "user", "content": "Name a colour."}],
    )
    assert m.content[0].type == "text" and m.content[0].text.strip()


def test_messages_stream_accumulates_the_text(gw_url: str) -> None:
    with client(gw_url).messages.stream(
        model=LOCAL_MODEL,
        max_tokens=12,
        messages=[{"role": "user", "content": "Name three colours."}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")


def test_create_with_stream_true_yields_the_event_sequence(gw_url: str) -> None:
    raw = client(gw_url).messages.with_raw_response.create(
        model=LOCAL_MODEL,
        max_tokens=8,
        stream=True,
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert raw.headers["x-aistack-backend"] == "local"
    kinds = [e.type for e in raw.parse()]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert "content_block_delta" in kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_tool_use_round_trip(gw_url: str) -> None:
    c = client(gw_url)
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = c.messages.create(model=LOCAL_MODEL, max_tokens=64, tools=[WEATHER], messages=ask)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and use.id
    turn: list[Any] = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": use.id,
                    "content": "12 C and raining",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ]
    second = c.messages.create(model=LOCAL_MODEL, max_tokens=24, tools=[WEATHER], messages=turn)
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert second.content[0].type == "text" and second.content[0].text.strip()


def test_a_streamed_tool_use_has_input_json_that_parses(gw_url: str) -> None:
    with client(gw_url).messages.stream(
        model=LOCAL_MODEL,
        max_tokens=64,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Bergen?"}],
    ) as s:
        final = s.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and isinstance(use.input, dict)


def test_count_tokens_gives_a_stated_estimate_without_a_tokenizer(gw_url: str) -> None:
    # An Ollama backend has no tokenizer to ask.
    raw = client(gw_url).messages.with_raw_response.count_tokens(
        model=UPSTREAM_MODEL, messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert raw.parse().input_tokens > 0
    assert raw.headers["x-aistack-tokens"] == "estimated"


@pytest.mark.parametrize("tools", [[], [WEATHER]], ids=["plain", "tools"])
def test_count_tokens_on_the_embedded_engine_is_what_the_model_reads(
    gw_url: str, tools: list[Any]
) -> None:
    c = client(gw_url)
    ask: dict[str, Any] = {
        "model": LOCAL_MODEL,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello there, how are you?"}],
        "tools": tools,
    }
    raw = c.messages.with_raw_response.count_tokens(**ask)
    assert raw.headers["x-aistack-tokens"] == "exact"
    m = c.messages.create(max_tokens=1, **ask)
    assert raw.parse().input_tokens == m.usage.input_tokens


def test_count_tokens_on_an_anthropic_backend_asks_it(gw_url: str) -> None:
    raw = client(gw_url).messages.with_raw_response.count_tokens(
        model=CLAUDE_MODEL, messages=[{"role": "user", "content": "Hello"}], tools=[WEATHER]
    )
    assert raw.parse().input_tokens > 0
    # The backend (another aistack, on its embedded engine) counted.
    assert raw.headers["x-aistack-tokens"] == "exact"


def test_the_model_list_in_anthropic_format(gw_url: str) -> None:
    ids = [m.id for m in client(gw_url).models.list(limit=1000)]
    assert LOCAL_MODEL in ids and CLAUDE_MODEL in ids


@pytest.mark.parametrize(
    ("kwargs", "error", "etype"),
    [
        ({"model": "no-such-model:1b"}, anthropic.NotFoundError, "not_found_error"),
        ({"model": LOCAL_MODEL, "messages": "hi"}, anthropic.BadRequestError, None),
        (
            {"model": LOCAL_MODEL, "tool_choice": {"type": "sometimes"}},
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
        (
            {
                "model": LOCAL_MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}
                        ],
                    }
                ],
            },
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
    ],
    ids=["unknown-model", "messages-not-a-list", "bad-tool-choice", "image-url"],
)
def test_errors_raise_the_clients_own_exception(
    gw_url: str, kwargs: dict[str, Any], error: type[Exception], etype: str | None
) -> None:
    args: dict[str, Any] = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    args.update(kwargs)
    with pytest.raises(error) as e:
        client(gw_url).messages.create(**args)
    body = e.value.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["message"]
    if etype is not None:
        assert body["error"]["type"] == etype


def _post(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=120)
    try:
        conn.request(
            "POST", path, json.dumps(body), {"content-type": "application/json", **headers}
        )
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_what_claude_code_sends_streams_back_whole_blocks(gw_url: str) -> None:
    """Claude Code's turn (shared/reference/agent-clients.md): ?beta=true, x-api-key,
    the billing header block, a system message inside `messages`, tools with `$schema`,
    adaptive thinking, effort, context_management, a JSON-string user id."""
    body = {
        "model": LOCAL_MODEL,
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.a1f;"},
            {
                "type": "text",
                "text": "You are a helpful CLI.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
            {"role": "system", "content": "The working directory is /tmp."},
        ],
        "tools": [],
        "metadata": {"user_id": json.dumps({"session_id": "s1"})},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }
    headers = {
        "x-api-key": "x",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "x-app": "cli",
    }
    status, text = _post(gw_url, "/v1/messages?beta=true", body, headers)
    assert status == 200, text
    events = [ln[7:] for ln in text.splitlines() if ln.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_start") == events.count("content_block_stop") >= 1
    assert events[-2] == "message_delta"
