"""OpenAI wire <-> core, both directions, for requests and whole responses.

Server side (an app calls us): `chat_request_from_wire`, `completion_request_from_wire`,
`embed_request_from_wire`, and the `*_to_wire` response encoders.
Client side (we call an OpenAI-compatible backend): `chat_request_to_wire`,
`completion_request_to_wire`, `embed_request_to_wire`, and `chat_chunk_from_response`.

Where OpenAI and the core differ: tool-call arguments are a JSON string here and an
object in the core; images are `data:` URLs here and raw base64 there; reasoning is
`reasoning_effort` in and `reasoning` out (some servers say `reasoning_content`).
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
import time
from typing import Any

from aistack.core.chat import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Image,
    JsonFormat,
    JSONObject,
    Message,
    Sampling,
    Think,
    ToolCall,
    ToolChoice,
)
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.events import Chunk, FinishReason, Usage
from aistack.core.models import ModelCard
from aistack.dialects._fields import (
    as_int,
    body_object,
    item_obj,
    opt_bool,
    opt_float,
    opt_int,
    opt_obj,
    opt_str,
    require_model,
    str_list,
    type_name,
    wrong_type,
)
from aistack.dialects._images import sniff_mime
from aistack.dialects._tools import tool_calls_from_wire, tools_from_wire, tools_to_wire

# ---------------------------------------------------------------------------------------
# requests from apps

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_PLAIN_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# reasoning_effort -> the core's think value (Ollama's own mapping).
_EFFORT_IN: dict[str, Think] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def think_from_effort(v: object, path: str = "reasoning_effort") -> Think | None:
    if v is None:
        return None
    if isinstance(v, str) and v in _EFFORT_IN:
        return _EFFORT_IN[v]
    raise invalid(
        f"invalid value for '{path}': {v!r}; expected one of {', '.join(_EFFORT_IN)}", path
    )


def effort_from_think(t: Think | None) -> str | None:
    if t is None or t is False:
        return None
    if t is True:
        return "medium"
    return "high" if t == "max" else t


def image_from_url(url: object, path: str) -> Image:
    if not isinstance(url, str):
        raise wrong_type(path, "a string", url)
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise invalid(f"invalid image input in '{path}': expected a base64 data URL", path)
        return Image(data=data, mime=head[5:].split(";", 1)[0])
    if url.startswith(("http://", "https://")):
        # Fetching would be network access the operator did not configure.
        raise invalid(
            "image URLs are not currently supported, please use base64 encoded data instead",
            path,
        )
    raise invalid(f"invalid image input in '{path}'", path)


def _content_from_wire(v: object, path: str) -> tuple[str, tuple[Image, ...]]:
    if v is None:
        return "", ()
    if isinstance(v, str):
        return v, ()
    if not isinstance(v, list):
        raise wrong_type(path, "a string or an array of content parts", v)
    texts: list[str] = []
    images: list[Image] = []
    for i, raw in enumerate(v):
        p = f"{path}[{i}]"
        part = item_obj(raw, p)
        kind = part.get("type")
        if kind in ("text", "input_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise wrong_type(f"{p}.text", "a string", text)
            texts.append(text)
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            images.append(image_from_url(url, f"{p}.image_url.url"))
        else:
            raise invalid(f"unsupported content part type {kind!r} in '{p}'", f"{p}.type")
    return "\n".join(texts), tuple(images)


def _messages_from_wire(v: object) -> tuple[Message, ...]:
    if not isinstance(v, list):
        if v is None:
            raise invalid("'messages' is required", "messages")
        raise wrong_type("messages", "an array", v)
    if not v:
        raise invalid("[] is too short - 'messages'", "messages")
    out: list[Message] = []
    call_names: dict[str, str] = {}
    for i, raw in enumerate(v):
        if type(raw) is dict and len(raw) == 2:
            # Most messages are just a role and a text: no need to look for the rest.
            role, content = raw.get("role"), raw.get("content")
            if type(content) is str and type(role) is str and role in _PLAIN_ROLES:
                out.append(Message(role=_PLAIN_ROLES[role], content=content))
                continue
        p = f"messages[{i}]"
        m = item_obj(raw, p)
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise invalid(
                f"invalid value for '{p}.role': {role!r}; expected one of "
                "system, developer, user, assistant, tool",
                f"{p}.role",
            )
        content, images = _content_from_wire(m.get("content"), f"{p}.content")
        calls = tool_calls_from_wire(m.get("tool_calls"), f"{p}.tool_calls")
        for c in calls:
            if c.id:
                call_names[c.id] = c.name
        thinking = m.get("reasoning") or m.get("reasoning_content") or ""
        if not isinstance(thinking, str):
            thinking = ""
        tool_call_id = opt_str(m, "tool_call_id", f"{p}.tool_call_id") or ""
        name = m.get("name") if isinstance(m.get("name"), str) else ""
        if role == "tool" or role == "function":
            tool_name = name or call_names.get(tool_call_id, "")
            out.append(
                Message(
                    role="tool", content=content, tool_call_id=tool_call_id, tool_name=tool_name
                )
            )
            continue
        out.append(
            Message(
                role="system" if role == "developer" else role,
                content=content,
                images=images,
                tool_calls=calls,
                thinking=thinking,
            )
        )
    return tuple(out)


def _tool_choice_from_wire(v: object) -> ToolChoice | None:
    if v is None:
        return None
    if v in ("auto", "none", "required"):
        return ToolChoice(mode=v)
    if isinstance(v, dict):
        fn = v.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return ToolChoice(mode="function", name=fn["name"])
    raise invalid(
        "invalid value for 'tool_choice': expected 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def _response_format_from_wire(v: object) -> JsonFormat | None:
    if v is None:
        return None
    rf = item_obj(v, "response_format")
    kind = rf.get("type")
    at = "response_format.json_schema"
    spec = item_obj(rf.get("json_schema"), at) if kind == "json_schema" else None
    return json_format(kind, spec, "response_format", at)


def json_format(
    kind: object, spec: dict[str, Any] | None, where: str, spec_at: str
) -> JsonFormat | None:
    """A format `type` (`text`, `json_object` or `json_schema`, whose schema, name and
    strict are in `spec`, at `spec_at`) as the core's; `where` names the field."""
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonFormat(path=where)
    if kind == "json_schema" and spec is not None:
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise wrong_type(f"{spec_at}.schema", "an object", schema)
        strict = spec.get("strict")
        return JsonFormat(
            schema=schema,
            path=f"{spec_at}.schema",
            name=str(spec.get("name") or ""),
            strict=strict if isinstance(strict, bool) else None,
        )
    raise invalid(
        f"invalid value for '{where}.type': {kind!r}; "
        "expected 'text', 'json_object' or 'json_schema'",
        f"{where}.type",
    )


def _sampling_from_wire(b: dict[str, Any]) -> Sampling:
    key = "max_completion_tokens" if b.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = opt_int(b, key)
    if max_tokens is not None and max_tokens < 1:
        # OpenAI's own wording; 0 would ask for an answer of no tokens.
        raise invalid(
            f"Invalid '{key}': integer below minimum value. Expected a value >= 1, "
            f"but got {max_tokens} instead.",
            key,
        )
    stop = b.get("stop")
    return Sampling(
        max_tokens=max_tokens,
        temperature=opt_float(b, "temperature"),
        top_p=opt_float(b, "top_p"),
        # Not OpenAI's, but vLLM, llama.cpp and OpenRouter accept them; so do we.
        top_k=opt_int(b, "top_k"),
        min_p=opt_float(b, "min_p"),
        seed=opt_int(b, "seed"),
        stop=None if stop is None else str_list(stop, "stop"),
        presence_penalty=opt_float(b, "presence_penalty"),
        frequency_penalty=opt_float(b, "frequency_penalty"),
        repeat_penalty=opt_float(b, "repetition_penalty") or opt_float(b, "repeat_penalty"),
    )


def _include_usage(b: dict[str, Any]) -> bool:
    so = opt_obj(b, "stream_options")
    return bool(so and so.get("include_usage") is True)


def _check_n(b: dict[str, Any]) -> None:
    n = opt_int(b, "n")
    if n is not None and n != 1:
        raise invalid("only n=1 is supported", "n")


def _reasoning(b: dict[str, Any]) -> Think | None:
    think = think_from_effort(b.get("reasoning_effort"))
    r = b.get("reasoning")
    if think is None and isinstance(r, dict) and "effort" in r:
        think = think_from_effort(r.get("effort"), "reasoning.effort")
    return think


# Fields the core models; every other field is kept for OpenAI-speaking backends.
_CHAT_KNOWN = frozenset(
    {
        "model", "messages", "stream", "stream_options", "tools", "tool_choice",
        "response_format", "reasoning_effort", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty",
        "frequency_penalty", "repetition_penalty", "repeat_penalty", "n", "user",
    }
)  # fmt: skip


def _extra(b: dict[str, Any], known: frozenset[str]) -> JSONObject:
    if b.keys() <= known:
        return {}  # the usual case: nothing beyond what the core models
    return {k: v for k, v in b.items() if k not in known}


def chat_request_from_wire(body: object) -> ChatRequest:
    b = body_object(body)
    model = require_model(b)
    _check_n(b)
    return ChatRequest(
        model=model,
        messages=_messages_from_wire(b.get("messages")),
        stream=opt_bool(b, "stream") or False,
        tools=tools_from_wire(b.get("tools")),
        tool_choice=_tool_choice_from_wire(b.get("tool_choice")),
        format=_response_format_from_wire(b.get("response_format")),
        think=_reasoning(b),
        sampling=_sampling_from_wire(b),
        include_usage=_include_usage(b),
        user=opt_str(b, "user") or "",
        extra=_extra(b, _CHAT_KNOWN),
        extra_dialect="openai",
    )


_COMPLETION_KNOWN = _CHAT_KNOWN | {"prompt", "suffix", "echo", "logprobs", "best_of"}


def completion_request_from_wire(body: object) -> GenerateRequest:
    """/v1/completions: a raw prompt, no chat template (one prompt only)."""
    b = body_object(body)
    model = require_model(b)
    _check_n(b)
    prompt = b.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif all(isinstance(p, str) for p in prompt):
            raise invalid("only one prompt per request is supported", "prompt")
        else:
            raise invalid("token arrays are not supported; send the prompt as a string", "prompt")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise wrong_type("prompt", "a string", prompt)
    if opt_bool(b, "echo"):
        raise invalid("echo is not supported", "echo")
    return GenerateRequest(
        model=model,
        prompt=prompt,
        suffix=opt_str(b, "suffix") or "",
        raw=True,
        stream=opt_bool(b, "stream") or False,
        format=_response_format_from_wire(b.get("response_format")),
        sampling=_sampling_from_wire(b),
        include_usage=_include_usage(b),
        user=opt_str(b, "user") or "",
        extra=_extra(b, _COMPLETION_KNOWN),
        extra_dialect="openai",
    )


def embed_request_from_wire(body: object) -> tuple[EmbedRequest, str]:
    """/v1/embeddings; returns the request and the encoding format (float or base64)."""
    b = body_object(body)
    model = require_model(b)
    v = b.get("input")
    if isinstance(v, str) and v:
        inputs: tuple[str, ...] = (v,)
    elif isinstance(v, list) and v and all(isinstance(s, str) for s in v):
        inputs = tuple(v)
        for i, text in enumerate(inputs):
            if not text:
                # OpenAI refuses an empty string: a model reads no tokens from it.
                raise invalid(f"'input[{i}]' must not be an empty string", f"input[{i}]")
    elif isinstance(v, list) and v:
        raise invalid("token arrays are not supported; send the input as strings", "input")
    elif v is None:
        raise invalid("'input' is required", "input")
    else:
        raise invalid(
            "invalid input: expected a non-empty string or a non-empty array of strings", "input"
        )
    fmt = opt_str(b, "encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid(
            f"invalid value for 'encoding_format': {fmt!r}; expected 'float' or 'base64'",
            "encoding_format",
        )
    dims = opt_int(b, "dimensions")
    if dims is not None and dims <= 0:
        raise invalid("'dimensions' must be a positive integer", "dimensions")
    req = EmbedRequest(model=model, inputs=inputs, dimensions=dims, user=opt_str(b, "user") or "")
    return req, fmt


# ---------------------------------------------------------------------------------------
# responses to apps


def usage_to_wire(u: Usage | None) -> JSONObject:
    u = u or Usage()
    out: JSONObject = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    if u.cost is not None:
        out["cost"] = u.cost
    return out


def tool_calls_to_wire(calls: tuple[ToolCall, ...], with_index: bool = False) -> list[JSONObject]:
    import orjson

    out: list[JSONObject] = []
    for i, c in enumerate(calls):
        tc: JSONObject = {
            "id": c.id or f"call_{i}",
            "type": "function",
            "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
        }
        if with_index:
            tc = {"index": i, **tc}
        out.append(tc)
    return out


def finish_to_wire(c: Chunk) -> str:
    f = c.finish
    if c.tool_calls and f in (None, "stop"):
        return "tool_calls"
    if f in ("length", "tool_calls", "content_filter"):
        return f
    return "stop"


def chat_response_to_wire(c: Chunk, model: str, rid: str, created: int) -> JSONObject:
    msg: JSONObject = {"role": "assistant", "content": c.content}
    if c.thinking:
        msg["reasoning"] = c.thinking
    if c.tool_calls:
        msg["tool_calls"] = tool_calls_to_wire(c.tool_calls)
        if not c.content:
            msg["content"] = None
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_aistack",
        "choices": [{"index": 0, "message": msg, "finish_reason": finish_to_wire(c)}],
        "usage": usage_to_wire(c.usage),
    }


def completion_response_to_wire(c: Chunk, model: str, rid: str, created: int) -> JSONObject:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_aistack",
        "choices": [
            {"text": c.content, "index": 0, "logprobs": None, "finish_reason": finish_to_wire(c)}
        ],
        "usage": usage_to_wire(c.usage),
    }


def _b64_floats(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def embed_response_to_wire(r: EmbedResult, model: str, encoding_format: str) -> JSONObject:
    data = [
        {
            "object": "embedding",
            "embedding": _b64_floats(e) if encoding_format == "base64" else e,
            "index": i,
        }
        for i, e in enumerate(r.embeddings)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens},
    }


def model_to_wire(name: str, card: ModelCard) -> JSONObject:
    return {
        "id": name,
        "object": "model",
        "created": int(card.modified_at or 0),
        "owned_by": card.owned_by or card.backend,
    }


def models_to_wire(models: list[JSONObject]) -> JSONObject:
    return {"object": "list", "data": models}


_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """Unique per process run: a random prefix and a counter (urandom per call costs more)."""
    return f"{prefix}-{_ID_PREFIX}{next(_ids):08x}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------------------
# requests to an OpenAI-compatible backend


def _content_to_wire(m: Message) -> str | list[JSONObject]:
    if not m.images:
        return m.content
    parts: list[JSONObject] = []
    if m.content:
        parts.append({"type": "text", "text": m.content})
    for img in m.images:
        mime = img.mime or sniff_mime(img.data)
        parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{img.data}"}})
    return parts


def messages_to_wire(messages: tuple[Message, ...]) -> list[JSONObject]:
    """Core messages as OpenAI messages, giving every tool call an id and every tool
    result the id it answers (native clients may send neither)."""
    out: list[JSONObject] = []
    pending: dict[str, list[str]] = {}  # tool name -> ids not yet answered
    last_ids: list[str] = []
    n = 0
    for m in messages:
        if m.role == "tool":
            call_id = m.tool_call_id
            if not call_id:
                ids = pending.get(m.tool_name) or (last_ids if not m.tool_name else [])
                call_id = ids.pop(0) if ids else f"call_{n}"
                if not m.tool_name and call_id in last_ids:
                    last_ids.remove(call_id)
            # No `name`: OpenAI's schema for tool messages rejects it.
            out.append({"role": "tool", "content": m.content, "tool_call_id": call_id})
            continue
        msg: JSONObject = {"role": m.role, "content": _content_to_wire(m)}
        if m.tool_calls:
            calls = []
            last_ids = []
            for c in m.tool_calls:
                cid = c.id or f"call_{n}"
                n += 1
                pending.setdefault(c.name, []).append(cid)
                last_ids.append(cid)
                calls.append(ToolCall(name=c.name, arguments=c.arguments, id=cid))
            msg["tool_calls"] = tool_calls_to_wire(tuple(calls))
            if not m.content:
                msg["content"] = None
        out.append(msg)
    return out


def _format_to_wire(f: JsonFormat) -> JSONObject:
    if f.schema is None:
        return {"type": "json_object"}
    js: JSONObject = {"name": f.name or "response", "schema": f.schema}
    if f.strict is not None:
        js["strict"] = f.strict
    return {"type": "json_schema", "json_schema": js}


def _sampling_to_wire(out: JSONObject, s: Sampling, extras: bool) -> None:
    if s.max_tokens is not None:
        out["max_tokens"] = s.max_tokens
    for key in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        v = getattr(s, key)
        if v is not None:
            out[key] = v
    if s.stop is not None:
        out["stop"] = list(s.stop)
    if extras:
        # Understood by vLLM, llama.cpp, LM Studio, OpenRouter; OpenAI itself rejects them.
        if s.top_k is not None:
            out["top_k"] = s.top_k
        if s.min_p is not None:
            out["min_p"] = s.min_p
        if s.repeat_penalty is not None:
            out["repeat_penalty"] = s.repeat_penalty


def chat_request_to_wire(
    r: ChatRequest, model: str, stream: bool, *, sampling_extras: bool = True
) -> JSONObject:
    out: JSONObject = {"model": model, "messages": messages_to_wire(r.messages)}
    if stream:
        out["stream"] = True
        # Always ask: the gateway meters every request, whether the app asked or not.
        out["stream_options"] = {"include_usage": True}
    if r.tools:
        out["tools"] = tools_to_wire(r.tools)
        if r.tool_choice is not None:
            out["tool_choice"] = _tool_choice_to_wire(r.tool_choice)
        if r.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = r.parallel_tool_calls
    if r.format is not None:
        out["response_format"] = _format_to_wire(r.format)
    effort = effort_from_think(r.think)
    if effort is not None:
        out["reasoning_effort"] = effort
    _sampling_to_wire(out, r.sampling, sampling_extras)
    return _carry(out, r)


def _carry(out: JSONObject, r: ChatRequest | GenerateRequest) -> JSONObject:
    """What passes through as the caller sent it: `user`, and its OpenAI-only fields."""
    if r.user:
        out["user"] = r.user
    if r.extra_dialect == "openai":
        for k, v in r.extra.items():
            out.setdefault(k, v)
    return out


def _tool_choice_to_wire(tc: ToolChoice) -> str | JSONObject:
    if tc.mode == "function":
        return {"type": "function", "function": {"name": tc.name}}
    return tc.mode


def completion_request_to_wire(
    r: GenerateRequest, model: str, stream: bool, *, sampling_extras: bool = True
) -> JSONObject:
    out: JSONObject = {"model": model, "prompt": r.prompt}
    if r.suffix:
        out["suffix"] = r.suffix
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if r.format is not None:
        out["response_format"] = _format_to_wire(r.format)
    _sampling_to_wire(out, r.sampling, sampling_extras)
    return _carry(out, r)


def embed_request_to_wire(r: EmbedRequest, model: str) -> JSONObject:
    out: JSONObject = {"model": model, "input": list(r.inputs), "encoding_format": "float"}
    if r.dimensions is not None:
        out["dimensions"] = r.dimensions
    if r.user:
        out["user"] = r.user
    return out


# ---------------------------------------------------------------------------------------
# what an OpenAI-compatible backend answers

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",
}


def finish_from_wire(v: object) -> FinishReason:
    return _FINISH.get(v, "stop") if isinstance(v, str) else "stop"


def usage_from_wire(v: object) -> Usage | None:
    if not isinstance(v, dict):
        return None
    ptd = v.get("prompt_tokens_details")
    ctd = v.get("completion_tokens_details")
    cost = v.get("cost")
    return Usage(
        prompt_tokens=as_int(v.get("prompt_tokens")),
        completion_tokens=as_int(v.get("completion_tokens")),
        cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        cached_tokens=as_int(ptd.get("cached_tokens")) if isinstance(ptd, dict) else None,
        reasoning_tokens=as_int(ctd.get("reasoning_tokens")) if isinstance(ctd, dict) else None,
    )


def error_message_from_wire(obj: object) -> str:
    """The message of an OpenAI (or OpenAI-ish) error body, whatever its shape."""
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)
            return str(err)
        if isinstance(err, str):
            return err
        detail = obj.get("detail")
        if detail:
            return str(detail)
    return str(obj)


def error_code_from_wire(obj: object) -> str | None:
    """The `code` of an OpenAI error body (`context_length_exceeded`, ...), if any."""
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            if isinstance(code, str) and code:
                return code
    return None


def chat_chunk_from_response(obj: JSONObject, backend: str = "") -> Chunk:
    """A whole chat.completion (or text_completion) as one final core chunk."""
    if "error" in obj and not obj.get("choices"):
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{backend}' failed: {error_message_from_wire(obj)}",
            backend=backend,
        )
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{backend}' answered without choices",
            backend=backend,
        )
    ch = choices[0]
    msg = ch.get("message")
    if isinstance(msg, dict):
        content = msg.get("content") or ""
        thinking = msg.get("reasoning") or msg.get("reasoning_content") or ""
        calls = tool_calls_from_wire(msg.get("tool_calls"), "tool_calls")
    else:
        content = ch.get("text") or ""
        thinking = ""
        calls = ()
    return Chunk(
        content=content if isinstance(content, str) else "",
        thinking=thinking if isinstance(thinking, str) else "",
        tool_calls=calls,
        finish=finish_from_wire(ch.get("finish_reason")),
        usage=usage_from_wire(obj.get("usage")),
        model=str(obj.get("model") or ""),
    )


def embed_result_from_wire(obj: JSONObject, model: str) -> EmbedResult:
    data = obj.get("data")
    if not isinstance(data, list):
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend answered embeddings data of type {type_name(data)}",
        )
    ordered = sorted((d for d in data if isinstance(d, dict)), key=lambda d: as_int(d.get("index")))
    embs: list[list[float]] = []
    for d in ordered:
        e = d.get("embedding")
        if isinstance(e, str):
            raw = base64.b64decode(e)
            embs.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))
        elif isinstance(e, list):
            embs.append(e)
    usage = obj.get("usage")
    tokens = as_int(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0
    return EmbedResult(model=model, embeddings=embs, prompt_tokens=tokens)


def models_from_wire(obj: JSONObject, backend: str) -> list[ModelCard]:
    data = obj.get("data")
    if not isinstance(data, list):
        return []
    cards: list[ModelCard] = []
    for m in data:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        ctx = m.get("context_length") or m.get("max_model_len")
        cards.append(
            ModelCard(
                name=m["id"],
                backend=backend,
                modified_at=float(as_int(m.get("created"))),
                owned_by=str(m.get("owned_by") or backend),
                context_length=ctx if isinstance(ctx, int) else None,
            )
        )
    return cards


_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def error_to_wire(e: GatewayError) -> JSONObject:
    """OpenAI's error envelope. Types follow OpenAI: 4xx requests are
    `invalid_request_error`, auth and limits their own, everything else `api_error`."""
    if e.status in _ERROR_TYPES:
        kind = _ERROR_TYPES[e.status]
    elif 400 <= e.status < 500:
        kind = "invalid_request_error"
    else:
        kind = "api_error"
    code = e.code
    if code is None and e.kind is ErrorKind.NOT_FOUND and e.param == "model":
        code = "model_not_found"
    return {"error": {"message": e.message, "type": kind, "param": e.param, "code": code}}
