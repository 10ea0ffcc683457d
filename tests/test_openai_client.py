"""The official `openai` Python client drives the real gateway over a socket."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from tests.conftest import LOCAL_MODEL

SHORT = {"max_tokens": 12, "seed": 7, "temperature": 0}


@pytest.fixture(scope="module")
def client(gw_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw_url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_models_lists_every_backend_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {LOCAL_MODEL, "smollm2-llamacpp:latest", "smollm2-upstream:135m", "tiny:latest"} <= ids


def test_retrieve_a_model_by_id_even_with_a_slash(client: openai.OpenAI) -> None:
    assert client.models.retrieve(LOCAL_MODEL).id == LOCAL_MODEL
    assert client.models.retrieve("openai/smollm2-135m").id == "openai/smollm2-135m"


def test_chat_completion_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": "Say hi."}], **SHORT
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.model == LOCAL_MODEL


def test_streamed_chat_with_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        stream=True,
        stream_options={"include_usage": True},
        **SHORT,
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert content and content[0].choices[0].delta.role == "assistant"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_completions_streamed_and_not(client: openai.OpenAI) -> None:
    r = client.completions.create(model=LOCAL_MODEL, prompt="The capital of France is", **SHORT)
    assert r.choices[0].text and r.usage is not None
    parts = list(
        client.completions.create(model=LOCAL_MODEL, prompt="Once upon", stream=True, **SHORT)
    )
    assert "".join(p.choices[0].text for p in parts if p.choices)


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model=LOCAL_MODEL, input=["hello", "world"])
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 576
    assert r.usage.prompt_tokens > 0
    b = client.embeddings.create(model=LOCAL_MODEL, input="hello", encoding_format="base64")
    raw = b.data[0].embedding
    # The SDK decodes base64 itself when it asked for it; either way it is 576 floats.
    if isinstance(raw, str):
        raw = list(struct.unpack("<576f", base64.b64decode(raw)))
    assert len(raw) == 576


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    tools: list[dict[str, object]] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(
        model=LOCAL_MODEL, messages=messages, tools=tools, tool_choice="required", max_tokens=40
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"})
    final = client.chat.completions.create(
        model=LOCAL_MODEL, messages=messages, tools=tools, **SHORT
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_streamed_tool_call_arrives_whole_with_an_index(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        stream=True,
        max_tokens=40,
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].index == 0 and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    r = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "A person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        max_tokens=60,
        temperature=0,
    )
    obj = json.loads(r.choices[0].message.content or "")
    assert isinstance(obj["name"], str) and isinstance(obj["age"], int)


def test_image_to_a_model_that_cannot_see_is_a_bad_request(client: openai.OpenAI) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
        "AAAABJRU5ErkJggg=="
    )
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    ],
                }
            ],
        )
    assert "does not support images" in str(e.value)


def test_http_image_urls_are_refused_not_fetched(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=LOCAL_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}],
                }
            ],
        )
    assert "base64" in str(e.value)


def test_unknown_model_is_the_clients_not_found_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="smollm2:1.7b", messages=[{"role": "user", "content": "hi"}]
        )
    body = e.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "smollm2:135m" in body["message"]


def test_reasoning_effort_is_accepted_by_a_model_that_does_not_think(
    client: openai.OpenAI,
) -> None:
    r = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        reasoning_effort="low",
        **SHORT,
    )
    assert r.choices[0].message.content


def test_served_model_is_named_in_a_header(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], **SHORT
    )
    assert raw.headers["x-aistack-model"] == LOCAL_MODEL
    assert raw.headers["x-aistack-backend"] == "local"
    assert raw.parse().model == LOCAL_MODEL
