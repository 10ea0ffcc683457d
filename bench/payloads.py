"""Canned wire bodies for the mock upstream, and the request bodies the load sends.

Everything here is bytes that a real OpenAI or Ollama server (or client) would put on the wire,
sized like a short chat turn: a ~450-byte request, a ~540-byte chat.completion, a 24-frame SSE
stream and a 21-line NDJSON stream. The nginx mock returns them verbatim, so the gateway parses
the same shapes it parses in production.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

CREATED = 1732400000
CREATED_AT = "2024-11-23T22:13:20.123456789Z"
# Twenty content deltas: the streamed answer, one frame each.
WORDS = [
    "The",
    " gateway",
    " forwards",
    " each",
    " request",
    " to",
    " a",
    " healthy",
    " backend",
    " that",
    " serves",
    " the",
    " model",
    ",",
    " then",
    " relays",
    " the",
    " answer",
    " back",
    ".",
]
ANSWER = (
    "The gateway forwards each request to a healthy backend that serves the model, "
    "then relays the answer back."
)
SYSTEM = "You are a concise assistant for a home lab. Answer in one or two sentences."
QUESTION = (
    "My Open WebUI, Home Assistant and Paperless all talk to different model servers. "
    "Explain in one short paragraph what putting a gateway in front of all of them changes for "
    "the apps, and what it costs."
)
USAGE = {"prompt_tokens": 57, "completion_tokens": 41, "total_tokens": 98}
OLLAMA_METRICS = {
    "total_duration": 1234567890,
    "load_duration": 12345678,
    "prompt_eval_count": 57,
    "prompt_eval_duration": 23456789,
    "eval_count": 41,
    "eval_duration": 987654321,
}

# Models the mock answers for, by URL prefix: (prefix, dialect, kind of answer).
OPENAI_MODELS = ["bench-oa-json", "bench-oa-sse", "bench-oa-sse-paced", "bench-oa-sse-long"]
OLLAMA_MODELS = ["bench-ol-json", "bench-ol-nd", "bench-ol-nd-paced", "bench-ol-nd-long"]

# Pacing of the streaming variants, seconds between tokens.
PACE = {"": 0.0, "-paced": 0.02, "-long": 0.5}


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --- responses: OpenAI -------------------------------------------------------------------------


def openai_completion(model: str) -> str:
    return dumps(
        {
            "id": "chatcmpl-bench0000000000000000000001",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                **USAGE,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )


def _chunk(model: str, delta: dict[str, str], finish: str | None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return dumps(
        {
            "id": "chatcmpl-bench0000000000000000000002",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [choice],
            "usage": None,
        }
    )


def openai_sse_frames(model: str) -> list[str]:
    """Role chunk, 20 content chunks, finish chunk, usage chunk, [DONE]: 24 `data:` frames."""
    frames = [_chunk(model, {"role": "assistant", "content": ""}, None)]
    frames += [_chunk(model, {"content": w}, None) for w in WORDS]
    frames.append(_chunk(model, {}, "stop"))
    usage = {
        "id": "chatcmpl-bench0000000000000000000002",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [],
        "usage": USAGE,
    }
    frames.append(dumps(usage))
    frames.append("[DONE]")
    return [f"data: {f}\n\n" for f in frames]


def openai_models() -> str:
    data = [
        {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"} for m in OPENAI_MODELS
    ]
    return dumps({"object": "list", "data": data})


# --- responses: Ollama -------------------------------------------------------------------------


def ollama_chat(model: str) -> str:
    return dumps(
        {
            "model": f"{model}:latest",
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ANSWER},
            "done_reason": "stop",
            "done": True,
            **OLLAMA_METRICS,
        }
    )


def ollama_generate(model: str) -> str:
    return dumps(
        {
            "model": f"{model}:latest",
            "created_at": CREATED_AT,
            "response": ANSWER,
            "done": True,
            "done_reason": "stop",
            **OLLAMA_METRICS,
        }
    )


def ollama_nd_lines(model: str, field: str = "message") -> list[str]:
    """20 `done:false` lines, then the final `done:true` line with the metrics: 21 lines."""

    def part(text: str) -> object:
        return {"role": "assistant", "content": text} if field == "message" else text

    base = {"model": f"{model}:latest", "created_at": CREATED_AT}
    lines = [dumps({**base, field: part(w), "done": False}) for w in WORDS]
    final = {**base, field: part(""), "done_reason": "stop", "done": True, **OLLAMA_METRICS}
    lines.append(dumps(final))
    return [line + "\n" for line in lines]


def ollama_tags() -> str:
    models = [
        {
            "name": f"{m}:latest",
            "model": f"{m}:latest",
            "modified_at": CREATED_AT,
            "size": 91739413,
            "digest": "a" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "134.52M",
                "quantization_level": "Q8_0",
            },
        }
        for m in OLLAMA_MODELS
    ]
    return dumps({"models": models})


def ollama_ps() -> str:
    """Every bench model loaded: the gateway's Ollama lanes run with affinity known, as a
    house whose models are warm does."""
    models = [
        {
            "name": f"{m}:latest",
            "model": f"{m}:latest",
            "size": 91739413,
            "size_vram": 91739413,
            "digest": "a" * 64,
            "details": {"format": "gguf", "family": "llama"},
            "expires_at": "2099-01-01T00:00:00Z",
            "context_length": 4096,
        }
        for m in OLLAMA_MODELS
    ]
    return dumps({"models": models})


def ollama_show() -> str:
    return dumps(
        {
            "modelfile": "FROM bench\n",
            "parameters": "temperature 0.2",
            "template": "{{ .Prompt }}",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "134.52M",
                "quantization_level": "Q8_0",
            },
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
            "capabilities": ["completion"],
            "modified_at": CREATED_AT,
        }
    )


# --- requests ----------------------------------------------------------------------------------


def openai_request(model: str, *, stream: bool, prompt: str = QUESTION) -> bytes:
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return dumps(body).encode()


def ollama_request(model: str, *, stream: bool, prompt: str = QUESTION) -> bytes:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "stream": stream,
        "options": {"temperature": 0.2, "num_predict": 256},
    }
    return dumps(body).encode()


def anthropic_request(model: str, *, stream: bool, prompt: str = QUESTION) -> bytes:
    """The same turn as Claude Code sends it to /v1/messages (system apart, max_tokens
    required)."""
    body = {
        "model": model,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": stream,
    }
    return dumps(body).encode()


def responses_request(model: str, *, stream: bool, prompt: str = QUESTION) -> bytes:
    """The same turn to /v1/responses, with `store: false` as Codex sends it."""
    body = {
        "model": model,
        "instructions": SYSTEM,
        "input": prompt,
        "max_output_tokens": 256,
        "temperature": 0.2,
        "store": False,
        "stream": stream,
    }
    return dumps(body).encode()


@functools.cache
def big_prompt(size: int = 500_000) -> str:
    """An agent-sized prompt of `size` UTF-8 bytes: code-like lines with quotes, tabs, non-ASCII."""
    line = '\tdef handler(request: "Request") -> dict:  # résumé, naïve, 東京 — "quoted" \\ path\n'
    text = line * (size // len(line.encode()) + 1)
    return text.encode()[:size].decode(errors="ignore")


# --- nginx rendering ---------------------------------------------------------------------------


def nginx_quote(text: str) -> str:
    """A single-quoted nginx string; `$` would be read as a variable, so it must not occur."""
    if "$" in text:
        raise ValueError("canned bodies must not contain '$' (nginx variables)")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def echo_body(pieces: list[str], paced: list[bool], pace: float) -> str:
    """echo-module directives sending each piece as its own flushed chunk; a piece whose `paced`
    flag is set waits `pace` seconds first (tokens are paced, envelope frames are not)."""
    out = []
    for piece, wait in zip(pieces, paced, strict=True):
        if wait and pace:
            out.append(f"echo_sleep {pace};")
        out.append(f"echo -n {nginx_quote(piece)};")
        out.append("echo_flush;")
    return " ".join(out)


def mock_locations() -> str:
    """One `location` per model prefix, for the mock's server block."""
    json_answers = {
        "/oa-json/v1/chat/completions": openai_completion("bench-oa-json"),
        "/ol-json/api/chat": ollama_chat("bench-ol-json"),
        "/ol-json/api/generate": ollama_generate("bench-ol-json"),
    }
    blocks = [
        f"location = {path} {{ return 200 {nginx_quote(body)}; }}"
        for path, body in json_answers.items()
    ]
    for suffix, pace in PACE.items():
        model = f"bench-oa-sse{suffix}"
        # The role chunk goes out at once, each content chunk one pace later, and the finish,
        # usage and [DONE] frames right after the last token, as OpenAI and vLLM send them.
        frames = openai_sse_frames(model)
        paced = [False] + [True] * len(WORDS) + [False] * (len(frames) - len(WORDS) - 1)
        body = echo_body(frames, paced, pace)
        blocks.append(
            f"location = /oa-sse{suffix}/v1/chat/completions "
            f"{{ default_type text/event-stream; {body} }}"
        )
        model = f"bench-ol-nd{suffix}"
        for endpoint, field in (("chat", "message"), ("generate", "response")):
            lines = ollama_nd_lines(model, field)  # 20 paced tokens, then the done line at once
            body = echo_body(lines, [True] * len(WORDS) + [False], pace)
            blocks.append(
                f"location = /ol-nd{suffix}/api/{endpoint} "
                f"{{ default_type application/x-ndjson; {body} }}"
            )
    return "\n        ".join(blocks)


def render(template: Path, target: Path, values: dict[str, str]) -> None:
    """Fill `@NAME@` placeholders (nginx uses `$` and braces itself)."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    missing = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if missing:
        raise ValueError(f"{template}: unfilled placeholders {missing}")
    target.write_text(text)


def mock_values() -> dict[str, str]:
    return {
        "LOCATIONS": mock_locations(),
        "OA_MODELS": nginx_quote(openai_models()),
        "OL_TAGS": nginx_quote(ollama_tags()),
        "OL_SHOW": nginx_quote(ollama_show()),
        "OL_PS": nginx_quote(ollama_ps()),
    }
