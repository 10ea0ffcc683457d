"""Any client dialect reaches any backend: each pair streams a chat answer.

Clients: the official `ollama`, `openai` (chat and Responses) and `anthropic` packages.
Backends: the embedded engine (`local`), llama-cpp-python's own OpenAI-compatible server
(`openai` kind), a second aistack process serving the Ollama dialect (`ollama` kind),
and a third serving Anthropic's Messages (`anthropic` kind).
"""

from __future__ import annotations

import anthropic
import ollama
import openai
import pytest

from tests.conftest import CLAUDE_MODEL, LLAMACPP_MODEL, LOCAL_MODEL, UPSTREAM_MODEL

BACKENDS = {
    "local": LOCAL_MODEL,
    "llamacpp": LLAMACPP_MODEL,
    "upstream": UPSTREAM_MODEL,
    "claude": CLAUDE_MODEL,
}
PROMPT = [{"role": "user", "content": "Name three colours."}]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_ollama_client_streams_a_chat_from(gw_url: str, backend: str) -> None:
    client = ollama.Client(host=gw_url, timeout=120)
    parts = list(
        client.chat(
            BACKENDS[backend],
            messages=PROMPT,
            stream=True,
            options={"num_predict": 12, "temperature": 0},
        )
    )
    assert len(parts) >= 2
    assert "".join(p.message.content or "" for p in parts).strip()
    final = parts[-1]
    assert final.done and final.eval_count and final.prompt_eval_count
    assert final.total_duration and final.eval_duration


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_openai_client_streams_a_chat_from(gw_url: str, backend: str) -> None:
    client = openai.OpenAI(base_url=f"{gw_url}/v1", api_key="x", timeout=120, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=BACKENDS[backend],
        messages=PROMPT,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=12,
        temperature=0,
    )
    assert raw.headers["x-aistack-backend"] == backend
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_responses_client_streams_a_chat_from(gw_url: str, backend: str) -> None:
    client = openai.OpenAI(base_url=f"{gw_url}/v1", api_key="x", timeout=120, max_retries=0)
    with client.responses.stream(
        model=BACKENDS[backend], input=PROMPT, max_output_tokens=12, store=False
    ) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas).strip() and final.output_text == "".join(deltas)
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_anthropic_client_streams_a_chat_from(gw_url: str, backend: str) -> None:
    client = anthropic.Anthropic(base_url=gw_url, api_key="x", timeout=120, max_retries=0)
    with client.messages.stream(
        model=BACKENDS[backend],
        max_tokens=12,
        messages=PROMPT,  # type: ignore[arg-type]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.usage.output_tokens > 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_non_streamed_answers_agree_on_usage_shape(gw_url: str, backend: str) -> None:
    client = openai.OpenAI(base_url=f"{gw_url}/v1", api_key="x", timeout=120, max_retries=0)
    r = client.chat.completions.create(
        model=BACKENDS[backend],
        messages=PROMPT,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].message.content


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_ollama_generate_reaches(gw_url: str, backend: str) -> None:
    client = ollama.Client(host=gw_url, timeout=120)
    r = client.generate(BACKENDS[backend], "Hello", options={"num_predict": 8})
    assert r.done and r.response


@pytest.mark.parametrize("backend", ["local", "upstream"])
def test_ollama_embed_reaches(gw_url: str, backend: str) -> None:
    client = ollama.Client(host=gw_url, timeout=120)
    e = client.embed(BACKENDS[backend], input="hello")
    assert len(e.embeddings) == 1 and len(e.embeddings[0]) > 0
    norm = sum(x * x for x in e.embeddings[0]) ** 0.5
    assert abs(norm - 1) < 1e-3


def test_a_backend_failure_is_a_bad_gateway_naming_the_backend(gw_url: str) -> None:
    # llama-cpp-python's server runs without --embedding, so it fails this on its side.
    client = ollama.Client(host=gw_url, timeout=120)
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(LLAMACPP_MODEL, input="hello")
    assert e.value.status_code == 502
    assert "llamacpp" in e.value.error
