"""The official `ollama` Python client drives the real gateway over a socket."""

from __future__ import annotations

import base64
import json

import ollama
import pytest
from pydantic import BaseModel

from tests.conftest import LOCAL_MODEL

SHORT = {"num_predict": 12, "seed": 7, "temperature": 0}


@pytest.fixture(scope="module")
def client(gw_url: str) -> ollama.Client:
    return ollama.Client(host=gw_url, timeout=120)


def test_lists_the_embedded_model_with_details(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert LOCAL_MODEL in models
    m = models[LOCAL_MODEL]
    assert m.size and m.size > 50_000_000
    assert m.digest and len(m.digest) == 64
    assert m.details is not None and m.details.format == "gguf"
    assert m.details.quantization_level == "Q4_1"


def test_lists_aliases_and_every_backend(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {"tiny:latest", "smollm2-llamacpp:latest", "smollm2-upstream:135m"} <= names


def test_show_has_model_info_and_capabilities(client: ollama.Client) -> None:
    info = client.show(LOCAL_MODEL)
    assert info.modelinfo is not None
    assert info.modelinfo["general.architecture"] == "llama"
    assert info.modelinfo["llama.context_length"] == 8192
    assert info.capabilities is not None and "completion" in info.capabilities
    assert info.template and "im_start" in info.template


def test_show_of_an_openai_backend_model_still_parses(client: ollama.Client) -> None:
    info = client.show("smollm2-llamacpp")
    assert info.modelinfo is not None


def test_chat_answers_with_metrics(client: ollama.Client) -> None:
    r = client.chat(LOCAL_MODEL, messages=[{"role": "user", "content": "Say hi."}], options=SHORT)
    assert r.message.role == "assistant"
    assert r.message.content
    assert r.done and r.done_reason in ("stop", "length")
    assert r.model == LOCAL_MODEL
    assert r.eval_count and r.prompt_eval_count
    assert r.total_duration and r.eval_duration and r.prompt_eval_duration


def test_chat_streams_chunks_then_a_final_done(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            LOCAL_MODEL,
            messages=[{"role": "user", "content": "Count to five."}],
            options=SHORT,
            stream=True,
        )
    )
    assert len(parts) > 2
    assert all(not p.done for p in parts[:-1])
    assert parts[-1].done and parts[-1].eval_count
    assert "".join(p.message.content or "" for p in parts)


def test_generate_streamed_and_not(client: ollama.Client) -> None:
    r = client.generate(LOCAL_MODEL, "The capital of France is", options=SHORT)
    assert r.response and r.done
    parts = list(client.generate(LOCAL_MODEL, "Once upon a time", options=SHORT, stream=True))
    assert parts[-1].done and "".join(p.response for p in parts)


def test_generate_with_an_empty_prompt_loads_the_model(client: ollama.Client) -> None:
    r = client.generate(LOCAL_MODEL, "")
    assert r.done and r.done_reason == "load" and r.response == ""


def test_embed_returns_unit_vectors(client: ollama.Client) -> None:
    r = client.embed(LOCAL_MODEL, input=["hello world", "the sky is blue"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    norm = sum(x * x for x in r.embeddings[0]) ** 0.5
    assert abs(norm - 1) < 1e-3


def test_legacy_embeddings_are_not_normalized(client: ollama.Client) -> None:
    r = client.embeddings(LOCAL_MODEL, prompt="hello world")
    norm = sum(x * x for x in r.embedding) ** 0.5
    assert len(r.embedding) == 576 and norm > 2


def test_tool_call_round_trip(client: ollama.Client) -> None:
    tools = [
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
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    r = client.chat(LOCAL_MODEL, messages=messages, tools=tools, options={"num_predict": 40})
    calls = r.message.tool_calls
    assert calls, r.message
    call = calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict) and "city" in call.function.arguments
    assert r.done_reason == "stop"  # native API says stop even for tool calls
    messages.append(r.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_name": "get_weather", "content": "18 C and sunny"})
    final = client.chat(LOCAL_MODEL, messages=messages, tools=tools, options=SHORT)
    assert final.message.content and not final.message.tool_calls


class City(BaseModel):
    name: str
    population: int


def test_json_schema_format_gives_matching_json(client: ollama.Client) -> None:
    r = client.chat(
        LOCAL_MODEL,
        messages=[{"role": "user", "content": "Describe a city as JSON."}],
        format=City.model_json_schema(),
        options={"num_predict": 60, "temperature": 0},
    )
    City.model_validate(json.loads(r.message.content or ""))


def test_json_format_constrains_the_output_to_json(client: ollama.Client) -> None:
    r = client.generate(
        LOCAL_MODEL,
        "Give a JSON object describing a cat.",
        format="json",
        options={"num_predict": 30, "temperature": 0},
    )
    # The tiny model rambles until num_predict; what it wrote is still JSON so far.
    assert r.response.lstrip().startswith("{")
    if r.done_reason == "stop":
        assert isinstance(json.loads(r.response), dict)


PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_image_to_a_model_that_cannot_see_is_a_clear_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(
            LOCAL_MODEL,
            messages=[{"role": "user", "content": "What is this?", "images": [PNG_1PX]}],
        )
    assert e.value.status_code == 400
    assert "does not support images" in e.value.error


def test_unknown_model_is_the_clients_not_found_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.chat("smollm3:135m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert "smollm2:135m" in e.value.error  # names the close match


def test_alias_resolves_and_echoes_the_requested_name(client: ollama.Client) -> None:
    r = client.chat("tiny", messages=[{"role": "user", "content": "hi"}], options=SHORT)
    assert r.model == "tiny" and r.message.content


def test_openai_style_alias_reaches_the_ollama_model(client: ollama.Client) -> None:
    r = client.generate("openai/smollm2-135m", "Hello", options=SHORT)
    assert r.response


def test_ps_shows_the_loaded_model(client: ollama.Client) -> None:
    client.generate(LOCAL_MODEL, "")
    names = [m.model for m in client.ps().models]
    assert LOCAL_MODEL in names


def test_case_and_latest_tag_do_not_matter(client: ollama.Client) -> None:
    r = client.generate("SmolLM2-llamacpp:latest", "Hi", options=SHORT)
    assert r.response
