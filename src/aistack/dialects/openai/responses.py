"""The OpenAI Responses API (`/v1/responses`): wire <-> core for the serving side.

A request is input items (messages, function calls and their outputs, reasoning) plus
settings; `call_from_wire` reads it into a `ResponsesCall`: the core request, the
items as they will be stored (each with an id), and what the response object echoes.
`messages_from_items` turns items (a stored conversation's and this request's) into
core messages, so `previous_response_id` is items prepended, nothing more.

Where Responses and the core differ: the system prompt may be `instructions` or
`system`/`developer` items; one assistant turn is several items (reasoning, a message,
function calls), folded into one core message; tool-call arguments are a JSON string;
reasoning items carry `encrypted_content`, kept as the reasoning's token.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from aistack.core.chat import (
    ChatRequest,
    Image,
    JsonFormat,
    JSONObject,
    Message,
    Reasoning,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
)
from aistack.core.errors import invalid
from aistack.core.events import Chunk, Usage
from aistack.dialects._fields import (
    body_object,
    item_obj,
    opt_bool,
    opt_float,
    opt_int,
    opt_list,
    opt_obj,
    opt_str,
    parse_arguments,
    require_model,
    wrong_type,
)
from aistack.dialects.openai.convert import image_from_url, json_format, new_id, think_from_effort


class ResponsesCall(msgspec.Struct, kw_only=True):
    """One /v1/responses request, read."""

    request: ChatRequest
    store: bool = True
    previous_response_id: str | None = None
    instructions: str = ""
    # This request's input as items, each with an id: what input_items lists and what a
    # later request's previous_response_id brings back.
    items: list[JSONObject] = msgspec.field(default_factory=list)
    # The request's settings the response object repeats (tools, tool_choice, ...).
    echo: JSONObject = msgspec.field(default_factory=dict)
    # Hosted tools (web_search, file_search, ...) no backend here can run: dropped.
    dropped_tools: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# input items -> core messages


def _parts(v: object, path: str) -> tuple[str, tuple[Image, ...]]:
    if isinstance(v, str):
        return v, ()
    if v is None:
        return "", ()
    if not isinstance(v, list):
        raise wrong_type(path, "a string or an array of content parts", v)
    texts: list[str] = []
    images: list[Image] = []
    for i, raw in enumerate(v):
        p = f"{path}[{i}]"
        part = item_obj(raw, p)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            t = part.get("text")
            if not isinstance(t, str):
                raise wrong_type(f"{p}.text", "a string", t)
            texts.append(t)
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        elif kind == "input_image":
            url = part.get("image_url")
            if url is None and part.get("file_id"):
                raise invalid(f"file inputs are not supported in '{p}'; send a data URL", p)
            images.append(image_from_url(url, f"{p}.image_url"))
        elif kind == "input_file":
            raise invalid(f"file inputs are not supported in '{p}'", p)
        else:
            raise invalid(f"unsupported content part type {kind!r} in '{p}'", f"{p}.type")
    return "\n".join(texts), tuple(images)


class _Turn:
    """The assistant turn being folded together from consecutive output items."""

    __slots__ = ("calls", "reasoning", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.reasoning: list[Reasoning] = []
        self.calls: list[ToolCall] = []

    def message(self) -> Message:
        return Message(
            role="assistant",
            content="".join(self.texts),
            thinking="\n".join(r.text for r in self.reasoning if r.text),
            reasoning=tuple(r for r in self.reasoning if r.signature),
            tool_calls=tuple(self.calls),
        )


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def messages_from_items(items: list[JSONObject], instructions: str = "") -> tuple[Message, ...]:
    out: list[Message] = [Message(role="system", content=instructions)] if instructions else []
    turn: _Turn | None = None
    names: dict[str, str] = {}  # call_id -> function name
    for i, it in enumerate(items):
        p = f"input[{i}]"
        kind = it.get("type", "message")
        if kind == "message":
            wire_role = it.get("role")
            role = _ROLES.get(wire_role) if isinstance(wire_role, str) else None
            if role is None:
                raise invalid(
                    f"invalid value for '{p}.role': {it.get('role')!r}; expected one of "
                    "user, assistant, system, developer",
                    f"{p}.role",
                )
            text, images = _parts(it.get("content"), f"{p}.content")
            if role == "assistant":
                turn = turn or _Turn()
                turn.texts.append(text)
                continue
            if turn is not None:
                out.append(turn.message())
                turn = None
            out.append(Message(role=role, content=text, images=images))
        elif kind == "function_call":
            turn = turn or _Turn()
            name = opt_str(it, "name", f"{p}.name") or ""
            call_id = opt_str(it, "call_id", f"{p}.call_id") or ""
            raw = it.get("arguments")
            args = parse_arguments(raw, f"{p}.arguments") if isinstance(raw, str) else raw
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise wrong_type(f"{p}.arguments", "a JSON object", args)
            names[call_id] = name
            turn.calls.append(
                ToolCall(name=name, arguments=args, id=call_id, index=len(turn.calls))
            )
        elif kind == "reasoning":
            turn = turn or _Turn()
            summary, _ = _parts(it.get("summary"), f"{p}.summary")
            if not summary and it.get("content"):
                summary, _ = _parts(it.get("content"), f"{p}.content")
            token = it.get("encrypted_content")
            turn.reasoning.append(
                Reasoning(
                    text=summary,
                    signature=token if isinstance(token, str) else "",
                    id=str(it.get("id") or ""),
                )
            )
        elif kind == "function_call_output":
            if turn is not None:
                out.append(turn.message())
                turn = None
            call_id = opt_str(it, "call_id", f"{p}.call_id") or ""
            text, images = _parts(it.get("output"), f"{p}.output")
            out.append(
                Message(
                    role="tool",
                    content=text,
                    images=images,
                    tool_call_id=call_id,
                    tool_name=names.get(call_id, ""),
                )
            )
        elif kind == "item_reference":
            raise invalid(f"item references are not supported in '{p}'", f"{p}.type")
        # Hosted tools' calls and results (web_search_call, ...): nothing a backend here
        # can read; dropped.
    if turn is not None:
        out.append(turn.message())
    return tuple(out)


def _items_from_wire(v: object) -> list[JSONObject]:
    """The input as items, each with an id (a string is one user message)."""
    if isinstance(v, str):
        return [_with_id({"type": "message", "role": "user", "content": v})]
    if v is None:
        return []
    if not isinstance(v, list):
        raise wrong_type("input", "a string or an array of input items", v)
    items = []
    for i, raw in enumerate(v):
        it = item_obj(raw, f"input[{i}]")
        if "type" not in it:
            it = {"type": "message", **it}
        items.append(_with_id(it))
    return items


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def _with_id(it: JSONObject) -> JSONObject:
    if it.get("id"):
        return it
    return {**it, "id": new_id(_ITEM_PREFIX.get(str(it.get("type")), "item"))}


# ---------------------------------------------------------------------------------------
# settings


def _function_tool(t: dict[str, Any], p: str) -> Tool:
    name = opt_str(t, "name", f"{p}.name")
    if not name:
        raise invalid(f"'{p}.name' is required", f"{p}.name")
    return Tool(
        name=name,
        description=opt_str(t, "description", f"{p}.description") or "",
        parameters=opt_obj(t, "parameters", f"{p}.parameters") or {},
    )


def tools_from_wire(v: object) -> tuple[tuple[Tool, ...], tuple[str, ...]]:
    """Function tools (those in `namespace` groups flattened), and the hosted tools
    dropped."""
    if v is None:
        return (), ()
    if not isinstance(v, list):
        raise wrong_type("tools", "an array", v)
    tools: list[Tool] = []
    dropped: list[str] = []
    for i, raw in enumerate(v):
        p = f"tools[{i}]"
        t = item_obj(raw, p)
        kind = t.get("type")
        if kind == "function":
            tools.append(_function_tool(t, p))
        elif kind == "namespace":
            for j, inner in enumerate(opt_list(t, "tools", f"{p}.tools") or []):
                q = f"{p}.tools[{j}]"
                it = item_obj(inner, q)
                if it.get("type", "function") == "function":
                    tools.append(_function_tool(it, q))
        else:
            dropped.append(str(kind))
    return tuple(tools), tuple(dropped)


def _tool_choice_from_wire(v: object) -> ToolChoice | None:
    if v is None:
        return None
    if v in ("auto", "none", "required"):
        return ToolChoice(mode=v)
    if isinstance(v, dict):
        if v.get("type") == "function" and isinstance(v.get("name"), str):
            return ToolChoice(mode="function", name=v["name"])
        if v.get("type") == "allowed_tools":
            mode = v.get("mode")
            return ToolChoice(mode="required" if mode == "required" else "auto")
        return None  # a hosted tool's choice: that tool is dropped, so the backend decides
    raise invalid(
        "invalid value for 'tool_choice': expected 'auto', 'none', 'required' or "
        '{"type": "function", "name": ...}',
        "tool_choice",
    )


def _format_from_wire(text: dict[str, Any] | None) -> JsonFormat | None:
    if text is None:
        return None
    f = opt_obj(text, "format", "text.format")
    if f is None:
        return None
    return json_format(f.get("type"), f, "text.format", "text.format")


_ECHO = (
    "instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "reasoning",
    "temperature", "text", "tool_choice", "tools", "top_p", "truncation", "user",
    "previous_response_id", "prompt_cache_key", "service_tier",
)  # fmt: skip


def call_from_wire(body: object) -> ResponsesCall:
    b = body_object(body)
    model = require_model(b)
    instructions = b.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise wrong_type("instructions", "a string", instructions)
    items = _items_from_wire(b.get("input"))
    previous = opt_str(b, "previous_response_id")
    if not items and not previous:
        raise invalid("'input' is required", "input")
    tools, dropped = tools_from_wire(b.get("tools"))
    reasoning = opt_obj(b, "reasoning")
    max_tokens = opt_int(b, "max_output_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise invalid("'max_output_tokens' must be a positive integer", "max_output_tokens")
    text = opt_obj(b, "text")
    user = opt_str(b, "user") or opt_str(b, "safety_identifier") or ""
    req = ChatRequest(
        model=model,
        # Without previous_response_id, the whole conversation is here; with it, the
        # route prepends the stored items before the request goes anywhere.
        messages=messages_from_items(items, instructions or ""),
        stream=opt_bool(b, "stream") or False,
        tools=tools,
        tool_choice=_tool_choice_from_wire(b.get("tool_choice")),
        parallel_tool_calls=opt_bool(b, "parallel_tool_calls"),
        format=_format_from_wire(text),
        think=think_from_effort(reasoning.get("effort"), "reasoning.effort")
        if reasoning is not None
        else None,
        sampling=Sampling(
            max_tokens=max_tokens,
            temperature=opt_float(b, "temperature"),
            top_p=opt_float(b, "top_p"),
        ),
        user=user,
    )
    store = opt_bool(b, "store")
    return ResponsesCall(
        request=req,
        store=True if store is None else store,
        previous_response_id=previous,
        instructions=instructions or "",
        items=items,
        echo={k: b[k] for k in _ECHO if k in b},
        dropped_tools=dropped,
    )


# ---------------------------------------------------------------------------------------
# the response object


def usage_to_wire(u: Usage | None) -> JSONObject:
    u = u or Usage()
    details: JSONObject = {"cached_tokens": u.cached_tokens or 0}
    if u.cache_write_tokens is not None:
        details["cache_write_tokens"] = u.cache_write_tokens
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": details,
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
        # Codex refuses a usage without it.
        "total_tokens": u.total_tokens,
    }


def response_base(call: ResponsesCall, rid: str, model: str, created: int) -> JSONObject:
    """The response object before any output: what `response.created` carries."""
    e = call.echo
    tools = e.get("tools") or []
    fmt = e.get("text") or {"format": {"type": "text"}}
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": e.get("instructions"),
        "max_output_tokens": e.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": e.get("parallel_tool_calls", True),
        "previous_response_id": call.previous_response_id,
        "reasoning": e.get("reasoning") or {"effort": None, "summary": None},
        "store": call.store,
        "temperature": e.get("temperature", 1.0),
        "text": fmt,
        "tool_choice": e.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": e.get("top_p", 1.0),
        "truncation": e.get("truncation", "disabled"),
        "usage": None,
        "user": e.get("user"),
        "metadata": e.get("metadata") or {},
    }


def reasoning_item(rid: str, text: str, token: str) -> JSONObject:
    item: JSONObject = {
        "id": rid,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "content": None,
    }
    if token:
        item["encrypted_content"] = token
    return item


def message_item(mid: str, text: str, status: str = "completed") -> JSONObject:
    return {
        "id": mid,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else [],
    }


def call_item(fid: str, call: ToolCall, status: str = "completed") -> JSONObject:
    return {
        "id": fid,
        "type": "function_call",
        "status": status,
        "call_id": call.id or new_id("call"),
        "name": call.name,
        "arguments": orjson.dumps(call.arguments).decode() if status == "completed" else "",
    }


def output_to_wire(c: Chunk) -> list[JSONObject]:
    """A whole answer's output items: reasoning, the message, function calls."""
    out: list[JSONObject] = []
    if c.thinking or c.signature:
        out.append(reasoning_item(new_id("rs"), c.thinking, c.signature))
    out += [reasoning_item(new_id("rs"), "", d) for d in c.redacted]
    if c.content or not c.tool_calls:
        out.append(message_item(new_id("msg"), c.content))
    out += [call_item(new_id("fc"), t) for t in c.tool_calls]
    return out


def finish_response(base: JSONObject, output: list[JSONObject], c: Chunk) -> JSONObject:
    """The response object once the answer is whole."""
    done = dict(base)
    done["output"] = output
    done["usage"] = usage_to_wire(c.usage)
    if c.finish == "length":
        done["status"] = "incomplete"
        done["incomplete_details"] = {"reason": "max_output_tokens"}
    elif c.finish == "content_filter":
        done["status"] = "incomplete"
        done["incomplete_details"] = {"reason": "content_filter"}
    else:
        done["status"] = "completed"
    return done


def response_to_wire(base: JSONObject, c: Chunk) -> JSONObject:
    return finish_response(base, output_to_wire(c), c)


def output_text(response: JSONObject) -> str:
    """What the SDKs call `output_text`: every output message's text, joined."""
    texts: list[str] = []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            texts += [p.get("text", "") for p in item.get("content") or []]
    return "".join(texts)


def input_items_to_wire(items: list[JSONObject], order: str = "desc") -> JSONObject:
    """GET /v1/responses/{id}/input_items: a list page (newest first by default)."""
    data = list(reversed(items)) if order == "desc" else list(items)
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": False,
    }


def deleted_to_wire(rid: str) -> JSONObject:
    return {"id": rid, "object": "response.deleted", "deleted": True}
