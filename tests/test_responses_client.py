"""The official `openai` client's Responses calls against `aistack serve`: create, stream,
a function-call round trip through `function_call_output`, `text.format` json_schema,
stored responses (retrieve, input_items, delete, previous_response_id), errors, and
the request Codex actually sends. (`previous_response_id` across two replicas sharing
one database: tests/test_replicas.py.)
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from tests.conftest import LOCAL_MODEL

SHELL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=120, max_retries=0)


def test_create_answers_with_output_text_and_usage(gw_url: str) -> None:
    r = client(gw_url).responses.create(
        model=LOCAL_MODEL, input="Say hi.", instructions="Be brief.", max_output_tokens=12
    )
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.output_text.strip() and r.output[0].type == "message"
    assert r.usage is not None and r.usage.total_tokens > r.usage.output_tokens > 0


def test_stream_sends_the_events_clients_assemble(gw_url: str) -> None:
    with client(gw_url).responses.stream(
        model=LOCAL_MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
        max_output_tokens=12,
    ) as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert kinds[-1] == "response.completed"
    assert final.output_text.strip()


def test_a_function_call_round_trip(gw_url: str) -> None:
    c = client(gw_url)
    first = c.responses.create(
        model=LOCAL_MODEL, input="What is the weather in Oslo?", tools=[SHELL], store=False
    )  # type: ignore[list-item]
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)
    second = c.responses.create(
        model=LOCAL_MODEL,
        tools=[SHELL],  # type: ignore[list-item]
        store=False,
        max_output_tokens=24,
        input=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "12 C, rain"},
        ],
    )
    assert second.output_text.strip()


def test_text_format_json_schema_gives_json(gw_url: str) -> None:
    r = client(gw_url).responses.create(
        model=LOCAL_MODEL,
        input="Name a colour.",
        max_output_tokens=40,
        text={
            "format": {
                "type": "json_schema",
                "name": "colour",
                "schema": {
                    "type": "object",
                    "properties": {"colour": {"type": "string"}},
                    "required": ["colour"],
                },
            }
        },
    )
    assert isinstance(json.loads(r.output_text)["colour"], str)


def test_a_stored_response_is_retrieved_listed_continued_and_deleted(gw_url: str) -> None:
    c = client(gw_url)
    first = c.responses.create(model=LOCAL_MODEL, input="My name is Ada.", max_output_tokens=8)
    assert c.responses.retrieve(first.id).output_text == first.output_text
    items = c.responses.input_items.list(first.id)
    assert [i.type for i in items.data] == ["message"]
    second = c.responses.create(
        model=LOCAL_MODEL, input="What is my name?", previous_response_id=first.id,
        max_output_tokens=8,
    )  # fmt: skip
    assert second.previous_response_id == first.id and second.output_text.strip()
    c.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        c.responses.create(model=LOCAL_MODEL, input="again", previous_response_id=first.id)


def test_store_false_keeps_nothing(gw_url: str) -> None:
    c = client(gw_url)
    r = c.responses.create(model=LOCAL_MODEL, input="hi", max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": "no-such-model:1b", "input": "hi"}, openai.NotFoundError),
        ({"model": LOCAL_MODEL, "input": 42}, openai.BadRequestError),
        (
            {"model": LOCAL_MODEL, "input": "hi", "text": {"format": {"type": "xml"}}},
            openai.BadRequestError,
        ),
    ],
    ids=["unknown-model", "input-not-items", "bad-format"],
)
def test_errors_raise_the_clients_own_exception(
    gw_url: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        client(gw_url).responses.create(**kwargs)


def test_what_codex_sends_streams_to_response_completed(gw_url: str) -> None:
    """Codex's turn (shared/reference/agent-clients.md): developer items, ids on every
    item, function tools, a namespace group, a hosted tool, reasoning items echoed
    back with encrypted content, store false, include, prompt_cache_key."""
    body = {
        "model": LOCAL_MODEL,
        "stream": True,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a-session",
        "client_metadata": {"originator": "codex_cli_rs"},
        "tools": [
            {**SHELL, "strict": False},
            {"type": "namespace", "name": "mcp__fs", "tools": [{**SHELL, "name": "read_file"}]},
            {"type": "web_search", "external_web_access": False},
        ],
        "input": [
            {"type": "message", "id": "m1", "role": "developer",
             "content": [{"type": "input_text", "text": "You are a coding agent."}]},
            {"type": "message", "id": "m2", "role": "user",
             "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": None,
             "encrypted_content": "gAAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city": "Oslo"}', "status": "completed"},
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_1",
             "output": "12 C"},
        ],
    }  # fmt: skip
    u = urlsplit(gw_url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=120)
    try:
        conn.request(
            "POST",
            "/v1/responses",
            json.dumps(body),
            {"content-type": "application/json", "accept": "text/event-stream",
             "authorization": "Bearer x"},
        )  # fmt: skip
        r = conn.getresponse()
        text = r.read().decode()
    finally:
        conn.close()
    assert r.status == 200, text
    data = [json.loads(ln[6:]) for ln in text.splitlines() if ln.startswith("data: ")]
    assert data[-1]["type"] == "response.completed"
    done = data[-1]["response"]
    assert done["usage"]["total_tokens"] > 0 and done["output"]
    assert any(d["type"] == "response.output_item.done" for d in data)
