"""Anthropic Messages wire <-> core, both directions, for requests and whole messages.

Server side (an app such as Claude Code calls us): `request_from_wire`,
`count_tokens_request_from_wire`, `message_to_wire`, `error_to_wire`, `models_to_wire`.
Client side (we call an Anthropic-compatible backend): `request_to_wire`,
`chunk_from_message`, `usage_from_wire`, `models_from_wire`, `error_message_from_wire`.

Where Anthropic and the core differ: the system prompt is a field here and a message
there; a message is a list of typed blocks (text, image, tool_use, tool_result,
thinking) where the core has one text, tool calls and tool results as their own
messages; tool input is an object in both; images are base64 with a media type in
both. `input_tokens` excludes cached tokens here; the core's `prompt_tokens` counts
them all (as OpenAI does).

A request that comes in as Anthropic and goes out to an Anthropic backend is sent as
the caller wrote it (only `model` and `stream` rewritten): block-level details the core
does not model (`cache_control`, citations, documents, server tools, interleaved
thinking order) survive the trip. Fields another backend cannot honour are dropped,
never a 400.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from aistack.core.chat import (
    ChatRequest,
    Image,
    JsonFormat,
    JSONObject,
    Message,
    Reasoning,
    Sampling,
    Think,
    Tool,
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
    wrong_type,
)
from aistack.dialects._images import sniff_mime
from aistack.dialects._tools import NO_PARAMETERS

DIALECT = "anthropic"
VERSION = "2023-06-01"  # the anthropic-version every client sends

_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """`msg_...`, `toolu_...`: unique per process run (a random prefix and a counter)."""
    return f"{prefix}_{_ID_PREFIX}{next(_ids):08x}"


# ---------------------------------------------------------------------------------------
# requests from apps

# output_config.effort -> the core's think level, when thinking is on.
_EFFORT: dict[str, Think] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}


def _image_from_wire(block: dict[str, Any], path: str) -> Image:
    src = item_obj(block.get("source"), f"{path}.source")
    kind = src.get("type")
    if kind == "base64":
        data = src.get("data")
        if not isinstance(data, str):
            raise wrong_type(f"{path}.source.data", "a base64 string", data)
        return Image(data=data, mime=opt_str(src, "media_type", f"{path}.source.media_type") or "")
    if kind == "url":
        # Fetching would be network access the operator did not configure.
        raise invalid(
            "image URLs are not currently supported, please use base64 encoded data instead",
            f"{path}.source",
        )
    raise invalid(f"unsupported image source type {kind!r} in '{path}.source'", f"{path}.source")


def _blocks(v: object, path: str) -> list[dict[str, Any]]:
    """Content as blocks: a string is one text block."""
    if isinstance(v, str):
        return [{"type": "text", "text": v}]
    if v is None:
        return []
    if not isinstance(v, list):
        raise wrong_type(path, "a string or an array of content blocks", v)
    out = []
    for i, raw in enumerate(v):
        b = item_obj(raw, f"{path}[{i}]")
        if not isinstance(b.get("type"), str):
            raise invalid(f"'{path}[{i}].type' is required", f"{path}[{i}].type")
        out.append(b)
    return out


def _text_of(b: dict[str, Any], path: str) -> str:
    t = b.get("text")
    if not isinstance(t, str):
        raise wrong_type(f"{path}.text", "a string", t)
    return t


def _tool_result_from_wire(b: dict[str, Any], path: str, names: dict[str, str]) -> Message:
    call_id = opt_str(b, "tool_use_id", f"{path}.tool_use_id") or ""
    if not call_id:
        raise invalid(f"'{path}.tool_use_id' is required", f"{path}.tool_use_id")
    texts: list[str] = []
    images: list[Image] = []
    for j, part in enumerate(_blocks(b.get("content"), f"{path}.content")):
        p = f"{path}.content[{j}]"
        if part["type"] == "text":
            texts.append(_text_of(part, p))
        elif part["type"] == "image":
            images.append(_image_from_wire(part, p))
    return Message(
        role="tool",
        content="\n".join(texts),
        images=tuple(images),
        tool_call_id=call_id,
        tool_name=names.get(call_id, ""),
        is_error=opt_bool(b, "is_error", f"{path}.is_error") or False,
    )


def _user_from_wire(content: object, path: str, names: dict[str, str]) -> list[Message]:
    """A user turn: its tool results as tool messages (first, as Anthropic orders them),
    then its text and images as one user message."""
    if isinstance(content, str):
        return [Message(role="user", content=content)]
    out: list[Message] = []
    texts: list[str] = []
    images: list[Image] = []
    for i, b in enumerate(_blocks(content, f"{path}.content")):
        p = f"{path}.content[{i}]"
        kind = b["type"]
        if kind == "text":
            texts.append(_text_of(b, p))
        elif kind == "image":
            images.append(_image_from_wire(b, p))
        elif kind == "tool_result":
            out.append(_tool_result_from_wire(b, p, names))
        # Documents, search results and the like: dropped for backends that cannot read
        # them (an Anthropic backend gets the caller's own blocks).
    if texts or images or not out:
        out.append(Message(role="user", content="\n".join(texts), images=tuple(images)))
    return out


def _assistant_from_wire(content: object, path: str, names: dict[str, str]) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=content)
    texts: list[str] = []
    thinking: list[str] = []
    reasoning: list[Reasoning] = []
    calls: list[ToolCall] = []
    for i, b in enumerate(_blocks(content, f"{path}.content")):
        p = f"{path}.content[{i}]"
        kind = b["type"]
        if kind == "text":
            texts.append(_text_of(b, p))
        elif kind == "tool_use":
            name = opt_str(b, "name", f"{p}.name") or ""
            cid = opt_str(b, "id", f"{p}.id") or ""
            args = b.get("input")
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise wrong_type(f"{p}.input", "an object", args)
            names[cid] = name
            calls.append(ToolCall(name=name, arguments=args, id=cid, index=len(calls)))
        elif kind == "thinking":
            text = opt_str(b, "thinking", f"{p}.thinking") or ""
            thinking.append(text)
            reasoning.append(
                Reasoning(text=text, signature=opt_str(b, "signature", f"{p}.signature") or "")
            )
        elif kind == "redacted_thinking":
            data = opt_str(b, "data", f"{p}.data") or ""
            reasoning.append(Reasoning(signature=data, redacted=True))
    return Message(
        role="assistant",
        content="".join(texts),
        thinking="\n".join(t for t in thinking if t),
        reasoning=tuple(reasoning),
        tool_calls=tuple(calls),
    )


def _system_from_wire(v: object, strip: tuple[str, ...], path: str = "system") -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return "" if strip and v.startswith(strip) else v
    texts = []
    for i, b in enumerate(_blocks(v, path)):
        if b["type"] == "text":
            t = _text_of(b, f"{path}[{i}]")
            if not (strip and t.startswith(strip)):
                texts.append(t)
    return "\n\n".join(texts)


def _messages_from_wire(v: object, system: str, strip: tuple[str, ...]) -> tuple[Message, ...]:
    if not isinstance(v, list):
        if v is None:
            raise invalid("messages: Field required", "messages")
        raise wrong_type("messages", "an array", v)
    out: list[Message] = [Message(role="system", content=system)] if system else []
    names: dict[str, str] = {}  # tool_use id -> tool name, for backends that match by name
    for i, raw in enumerate(v):
        p = f"messages[{i}]"
        if type(raw) is dict and len(raw) == 2:
            role, content = raw.get("role"), raw.get("content")
            if type(content) is str and (role == "user" or role == "assistant"):
                out.append(Message(role=role, content=content))
                continue
        m = item_obj(raw, p)
        role = m.get("role")
        content = m.get("content")
        if role == "user":
            out.extend(_user_from_wire(content, p, names))
        elif role == "assistant":
            out.append(_assistant_from_wire(content, p, names))
        elif role == "system":
            # Claude Code sends one in the middle of `messages`.
            text = _system_from_wire(content, strip, f"{p}.content")
            if text:
                out.append(Message(role="system", content=text))
        else:
            raise invalid(
                f"{p}.role: Input should be 'user' or 'assistant', got {role!r}", f"{p}.role"
            )
    if not out:
        raise invalid("messages: at least one message is required", "messages")
    return tuple(out)


def _schema_of(v: object, path: str) -> JSONObject:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise wrong_type(path, "an object", v)
    if "$schema" in v:
        # Claude Code sends a `$schema` key with every tool; some servers choke on it.
        return {k: x for k, x in v.items() if k != "$schema"}
    return v


def tools_from_wire(v: object) -> tuple[Tool, ...]:
    """Custom tools; Anthropic's server tools (web search, code execution) have no
    schema and are dropped: only an Anthropic backend could run them."""
    if v is None:
        return ()
    if not isinstance(v, list):
        raise wrong_type("tools", "an array", v)
    out: list[Tool] = []
    for i, raw in enumerate(v):
        p = f"tools[{i}]"
        t = item_obj(raw, p)
        kind = t.get("type")
        if kind not in (None, "custom") and "input_schema" not in t:
            continue
        name = opt_str(t, "name", f"{p}.name")
        if not name:
            raise invalid(f"{p}.name: Field required", f"{p}.name")
        out.append(
            Tool(
                name=name,
                description=opt_str(t, "description", f"{p}.description") or "",
                parameters=_schema_of(t.get("input_schema"), f"{p}.input_schema"),
            )
        )
    return tuple(out)


def _tool_choice_from_wire(v: object) -> tuple[ToolChoice | None, bool | None]:
    if v is None:
        return None, None
    tc = item_obj(v, "tool_choice")
    kind = tc.get("type")
    no_parallel = opt_bool(tc, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use")
    parallel = None if no_parallel is None else not no_parallel
    if kind == "auto":
        return ToolChoice(mode="auto"), parallel
    if kind == "any":
        return ToolChoice(mode="required"), parallel
    if kind == "none":
        return ToolChoice(mode="none"), parallel
    if kind == "tool":
        name = opt_str(tc, "name", "tool_choice.name")
        if not name:
            raise invalid("tool_choice.name: Field required", "tool_choice.name")
        return ToolChoice(mode="function", name=name), parallel
    raise invalid(
        f"tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', got {kind!r}",
        "tool_choice.type",
    )


def _think_from_wire(b: dict[str, Any], output: dict[str, Any] | None) -> Think | None:
    """`thinking` and `output_config.effort` as the core's think value.

    `adaptive` (the model decides) is the backend's default: None. Claude Code sends
    it, with an effort, for every model, so mapping it to "on" would make backends
    without reasoning refuse the request.
    """
    t = opt_obj(b, "thinking")
    kind = t.get("type") if t is not None else None
    if kind is None or kind == "adaptive":
        return None
    if kind == "disabled":
        return False
    if kind == "enabled":
        effort = output.get("effort") if output is not None else None
        return _EFFORT.get(effort, True) if isinstance(effort, str) else True
    # Newer types (between_tools, ...) mean "no reasoning shown": the backend decides.
    return None


def _format_from_wire(output: dict[str, Any] | None) -> JsonFormat | None:
    if output is None:
        return None
    f = opt_obj(output, "format", "output_config.format")
    if f is None:
        return None
    if f.get("type") != "json_schema":
        raise invalid(
            f"output_config.format.type: Input should be 'json_schema', got {f.get('type')!r}",
            "output_config.format.type",
        )
    schema = f.get("schema")
    if not isinstance(schema, dict):
        raise wrong_type("output_config.format.schema", "an object", schema)
    return JsonFormat(
        schema=schema, name=str(f.get("name") or ""), path="output_config.format.schema"
    )


def _user_of(b: dict[str, Any]) -> str:
    md = opt_obj(b, "metadata")
    if md is None:
        return ""
    uid = md.get("user_id")
    return uid if isinstance(uid, str) else ""


def request_from_wire(
    body: object, *, strip_system: tuple[str, ...] = (), counting: bool = False
) -> ChatRequest:
    """A Messages request. `strip_system`: prefixes of system blocks to drop (Claude
    Code's per-request `x-anthropic-billing-header:` block defeats prefix caches).
    `counting`: for count_tokens, where `max_tokens` and `stream` do not apply."""
    b = body_object(body)
    model = require_model(b)
    max_tokens = opt_int(b, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise invalid("max_tokens: Input should be greater than or equal to 1", "max_tokens")
    output = opt_obj(b, "output_config")
    system = _system_from_wire(b.get("system"), strip_system)
    tool_choice, parallel = _tool_choice_from_wire(b.get("tool_choice"))
    stop = b.get("stop_sequences")
    extra = dict(b)
    del extra["model"]
    extra.pop("stream", None)
    return ChatRequest(
        model=model,
        messages=_messages_from_wire(b.get("messages"), system, strip_system),
        stream=False if counting else (opt_bool(b, "stream") or False),
        tools=tools_from_wire(b.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        format=_format_from_wire(output),
        think=_think_from_wire(b, output),
        sampling=Sampling(
            max_tokens=max_tokens,
            temperature=opt_float(b, "temperature"),
            top_p=opt_float(b, "top_p"),
            top_k=opt_int(b, "top_k"),
            stop=None if stop is None else str_list(stop, "stop_sequences"),
        ),
        user=_user_of(b),
        # Everything the caller sent, for an Anthropic backend (see the module's docstring).
        extra=extra,
        extra_dialect=DIALECT,
    )


# ---------------------------------------------------------------------------------------
# responses to apps

_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def stop_reason_to_wire(c: Chunk, tool_use: bool) -> str:
    if tool_use:
        return "tool_use"
    return _STOP.get(c.finish or "stop", "end_turn")


def usage_to_wire(u: Usage | None) -> JSONObject:
    u = u or Usage()
    cached = u.cached_tokens or 0
    written = u.cache_write_tokens or 0
    return {
        "input_tokens": max(0, u.prompt_tokens - cached - written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": u.completion_tokens,
    }


def tool_use_to_wire(c: ToolCall) -> JSONObject:
    return {"type": "tool_use", "id": c.id or new_id("toolu"), "name": c.name, "input": c.arguments}


def content_to_wire(c: Chunk) -> list[JSONObject]:
    """A whole answer's blocks, in Anthropic's order: thinking, text, tool uses."""
    blocks: list[JSONObject] = []
    if c.thinking or c.signature:
        blocks.append({"type": "thinking", "thinking": c.thinking, "signature": c.signature})
    blocks += [{"type": "redacted_thinking", "data": d} for d in c.redacted]
    if c.content or not c.tool_calls:
        blocks.append({"type": "text", "text": c.content})
    blocks += [tool_use_to_wire(t) for t in c.tool_calls]
    return blocks


def message_to_wire(c: Chunk, model: str, mid: str) -> JSONObject:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_to_wire(c),
        "stop_reason": stop_reason_to_wire(c, bool(c.tool_calls)),
        "stop_sequence": None,
        "usage": usage_to_wire(c.usage),
    }


def count_tokens_to_wire(n: int) -> JSONObject:
    return {"input_tokens": n}


def model_to_wire(name: str, card: ModelCard) -> JSONObject:
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(card.modified_at or 0, UTC)
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def models_to_wire(models: list[JSONObject]) -> JSONObject:
    return {
        "data": models,
        "has_more": False,
        "first_id": models[0]["id"] if models else None,
        "last_id": models[-1]["id"] if models else None,
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_to_wire(e: GatewayError) -> JSONObject:
    """Anthropic's error envelope; the status is the gateway's (a 4xx for the caller's
    mistakes, which clients do not retry; a 5xx for the backend's, which they do)."""
    return {"type": "error", "error": {"type": error_type(e.status), "message": e.message}}


# ---------------------------------------------------------------------------------------
# requests to an Anthropic backend

DEFAULT_MAX_TOKENS = 4096  # required by the API; callers of other dialects may leave it out
# The core's think levels as thinking budgets (Anthropic needs at least 1024).
_BUDGET = {True: 4096, "low": 1024, "medium": 4096, "high": 16384, "max": 32000}


def _image_to_wire(img: Image) -> JSONObject:
    mime = img.mime or sniff_mime(img.data)
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": img.data}}


def _user_blocks(m: Message) -> list[JSONObject]:
    blocks: list[JSONObject] = [_image_to_wire(i) for i in m.images]
    if m.content or not blocks:
        blocks.append({"type": "text", "text": m.content})
    return blocks


def _assistant_blocks(m: Message, ids: list[str]) -> list[JSONObject]:
    blocks: list[JSONObject] = []
    for r in m.reasoning:
        # Unsigned thinking (from another backend) would be refused: left out.
        if r.redacted:
            blocks.append({"type": "redacted_thinking", "data": r.signature})
        elif r.signature:
            blocks.append({"type": "thinking", "thinking": r.text, "signature": r.signature})
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    for c, cid in zip(m.tool_calls, ids, strict=True):
        blocks.append({"type": "tool_use", "id": cid, "name": c.name, "input": c.arguments})
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _tool_result(m: Message, call_id: str) -> JSONObject:
    out: JSONObject = {"type": "tool_result", "tool_use_id": call_id}
    if m.images:
        out["content"] = _user_blocks(m)
    else:
        out["content"] = m.content
    if m.is_error:
        out["is_error"] = True
    return out


def messages_to_wire(messages: tuple[Message, ...]) -> tuple[str, list[JSONObject]]:
    """The system prompt and the turns. Every tool use gets an id and every result the
    id it answers (Ollama clients send neither); consecutive tool results share one
    user turn, as Anthropic wants them."""
    system: list[str] = []
    out: list[JSONObject] = []
    pending: dict[str, list[str]] = {}  # tool name -> ids not yet answered
    last: list[str] = []
    n = 0
    for m in messages:
        role = m.role
        if role == "system":
            if m.content:
                system.append(m.content)
            continue
        if role == "tool":
            cid = m.tool_call_id
            if not cid:
                ids = pending.get(m.tool_name) or ([] if m.tool_name else last)
                cid = ids.pop(0) if ids else f"toolu_{n}"
                if cid in last:
                    last.remove(cid)
            block = _tool_result(m, cid)
            prev = out[-1] if out else None
            if prev is not None and prev["role"] == "user" and prev.get("_results"):
                prev["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_results": True})
            continue
        if role == "assistant":
            ids = []
            for c in m.tool_calls:
                cid = c.id or f"toolu_{n}"
                n += 1
                pending.setdefault(c.name, []).append(cid)
                ids.append(cid)
            last = list(ids)
            out.append({"role": "assistant", "content": _assistant_blocks(m, ids)})
            continue
        blocks = _user_blocks(m)
        prev = out[-1] if out else None
        if prev is not None and prev.get("_results"):
            prev["content"].extend(blocks)  # text after tool results, in the same turn
            del prev["_results"]
        else:
            out.append({"role": "user", "content": blocks})
    for turn in out:
        turn.pop("_results", None)
    return "\n\n".join(system), out


def _tool_choice_to_wire(tc: ToolChoice | None, parallel: bool | None) -> JSONObject | None:
    if tc is None and parallel is None:
        return None
    mode = tc.mode if tc is not None else "auto"
    out: JSONObject = {"type": {"required": "any", "function": "tool"}.get(mode, mode)}
    if tc is not None and tc.mode == "function":
        out["name"] = tc.name
    if parallel is False and mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def request_to_wire(r: ChatRequest, model: str, stream: bool) -> JSONObject:
    if r.extra_dialect == DIALECT:
        # Anthropic in, Anthropic out: the caller's own body (see the module's docstring).
        out = {"model": model, **r.extra}
        out.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if stream:
            out["stream"] = True
        return out
    system, messages = messages_to_wire(r.messages)
    s = r.sampling
    out = {"model": model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = s.max_tokens or DEFAULT_MAX_TOKENS
    out["max_tokens"] = max_tokens
    thinking = r.think is not None and r.think is not False
    if thinking:
        budget = min(_BUDGET.get(r.think, 4096), max_tokens - 1)
        if budget >= 1024:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        else:
            thinking = False  # no room to think within max_tokens
    elif r.think is False:
        out["thinking"] = {"type": "disabled"}
    if not thinking:
        # Anthropic refuses sampling settings while thinking: they are dropped then.
        if s.temperature is not None:
            out["temperature"] = min(1.0, max(0.0, s.temperature))  # OpenAI's go up to 2
        if s.top_p is not None:
            out["top_p"] = s.top_p
        if s.top_k is not None:
            out["top_k"] = s.top_k
    if s.stop:
        out["stop_sequences"] = list(s.stop)
    if r.tools:
        out["tools"] = [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": t.parameters or NO_PARAMETERS,
            }
            for t in r.tools
        ]
        tc = _tool_choice_to_wire(r.tool_choice, r.parallel_tool_calls)
        if tc is not None:
            out["tool_choice"] = tc
    if r.format is not None:
        schema = r.format.schema if r.format.schema is not None else {"type": "object"}
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if r.user:
        out["metadata"] = {"user_id": r.user}
    if stream:
        out["stream"] = True
    return out


_COUNTED = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


def count_request_to_wire(r: ChatRequest, model: str) -> JSONObject:
    """A count_tokens request: the parts of a request that count."""
    full = request_to_wire(r, model, False)
    return {"model": model, **{k: full[k] for k in _COUNTED if k in full}}


# ---------------------------------------------------------------------------------------
# what an Anthropic backend answers

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_from_wire(v: object) -> FinishReason:
    return _FINISH.get(v, "stop") if isinstance(v, str) else "stop"


def usage_from_wire(v: object, base: Usage | None = None) -> Usage | None:
    """Anthropic's usage as the core's: cached and cache-written tokens are part of the
    prompt. `base` is what message_start said; message_delta's counts are cumulative."""
    if not isinstance(v, dict):
        return base
    b = base or Usage()
    read = v.get("cache_read_input_tokens")
    written = v.get("cache_creation_input_tokens")
    cached = as_int(read) if read is not None else b.cached_tokens
    cache_write = as_int(written) if written is not None else b.cache_write_tokens
    if "input_tokens" in v and v["input_tokens"] is not None:
        prompt = as_int(v["input_tokens"]) + (cached or 0) + (cache_write or 0)
    else:
        prompt = b.prompt_tokens
    out = v.get("output_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=as_int(out) if out is not None else b.completion_tokens,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
    )


def error_message_from_wire(obj: object) -> str:
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(obj)


def error_type_from_wire(obj: object) -> str:
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return str(err["type"])
    return ""


def chunk_from_message(obj: JSONObject, backend: str = "") -> Chunk:
    """A whole `message` as one final core chunk."""
    if obj.get("type") == "error":
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{backend}' failed: {error_message_from_wire(obj)}",
            backend=backend,
        )
    content = obj.get("content")
    if not isinstance(content, list):
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{backend}' answered a message without content",
            backend=backend,
        )
    texts: list[str] = []
    thinking: list[str] = []
    signature = ""
    redacted: list[str] = []
    calls: list[ToolCall] = []
    for b in content:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "text" and isinstance(b.get("text"), str):
            texts.append(b["text"])
        elif kind == "thinking":
            thinking.append(str(b.get("thinking") or ""))
            signature = str(b.get("signature") or "")
        elif kind == "redacted_thinking":
            redacted.append(str(b.get("data") or ""))
        elif kind == "tool_use":
            args = b.get("input")
            calls.append(
                ToolCall(
                    name=str(b.get("name") or ""),
                    arguments=args if isinstance(args, dict) else {},
                    id=str(b.get("id") or ""),
                    index=len(calls),
                )
            )
    return Chunk(
        content="".join(texts),
        thinking="".join(thinking),
        signature=signature,
        redacted=tuple(redacted),
        tool_calls=tuple(calls),
        finish=finish_from_wire(obj.get("stop_reason")),
        usage=usage_from_wire(obj.get("usage")),
        model=str(obj.get("model") or ""),
    )


def models_from_wire(obj: JSONObject, backend: str) -> list[ModelCard]:
    from datetime import datetime

    data = obj.get("data")
    if not isinstance(data, list):
        return []
    cards: list[ModelCard] = []
    for m in data:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        created = 0.0
        if isinstance(m.get("created_at"), str):
            try:
                created = datetime.fromisoformat(m["created_at"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                created = 0.0
        ctx = m.get("max_input_tokens")
        cards.append(
            ModelCard(
                name=m["id"],
                backend=backend,
                modified_at=created,
                owned_by="anthropic",
                capabilities=("completion", "tools", "vision"),
                context_length=ctx if isinstance(ctx, int) else None,
            )
        )
    return cards
