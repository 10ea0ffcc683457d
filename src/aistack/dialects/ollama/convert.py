"""Ollama native wire <-> core, both directions, for requests and whole responses.

Server side (an app calls us): `chat_request_from_wire`, `generate_request_from_wire`,
`embed_request_from_wire`, and the `*_to_wire` response encoders.
Client side (we call an Ollama backend): `chat_request_to_wire`, `generate_request_to_wire`,
`embed_request_to_wire`, and `chunk_from_wire` for what it answers.

Field semantics follow Ollama's Go server (`api/types.go`): `stream` absent means true,
tool-call arguments are objects, images are raw base64, durations are integer
nanoseconds, unknown fields and unknown options are accepted.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from aistack.core.chat import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Image,
    JsonFormat,
    JSONObject,
    KeepAlive,
    Message,
    Sampling,
    Think,
    ToolCall,
)
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.events import Chunk, FinishReason, Timings, Usage
from aistack.core.models import LoadedModel, ModelCard, ModelDetails, ModelShow
from aistack.dialects._fields import (
    INT_MAX,
    as_int,
    body_object,
    bounded_int,
    item_obj,
    opt_bool,
    opt_int,
    opt_list,
    opt_str,
    require_model,
    type_name,
    wrong_type,
)
from aistack.dialects._tools import tool_calls_from_wire, tools_from_wire, tools_to_wire

# ---------------------------------------------------------------------------------------
# small shared readers

_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_THINK_LEVELS = ("low", "medium", "high", "max")


def keep_alive_from_wire(v: object) -> KeepAlive | None:
    """A number of seconds, or a Go duration string; a unitless string is Ollama's 400."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise wrong_type("keep_alive", "a number or a duration string", v)
    if isinstance(v, int | float):
        # Go keeps a duration as int64 nanoseconds (about 292 years).
        if abs(v) * 1e9 > INT_MAX:
            raise invalid(
                f"invalid value for 'keep_alive': {v!r} seconds is out of range", "keep_alive"
            )
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s in ("0", "-0", "+0"):
            return s
        if _DURATION.match(s):
            if _duration_seconds(s) * 1e9 > INT_MAX:
                raise invalid(
                    f"invalid value for 'keep_alive': duration \"{s}\" is out of range",
                    "keep_alive",
                )
            return s
        try:
            float(s)
        except ValueError:
            raise invalid(f'time: invalid duration "{s}"', "keep_alive") from None
        raise invalid(f'time: missing unit in duration "{s}"', "keep_alive")
    raise wrong_type("keep_alive", "a number or a duration string", v)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
}


def _duration_seconds(s: str) -> float:
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(s))


def think_from_wire(v: object) -> Think | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str) and v in _THINK_LEVELS:
        return v  # type: ignore[return-value]  # narrowed by the membership test
    raise invalid("invalid think value", "think")


def format_from_wire(v: object) -> JsonFormat | None:
    if v is None or v == "":
        return None
    if v == "json":
        return JsonFormat()
    if isinstance(v, dict):
        return JsonFormat(schema=v)
    raise invalid(f'invalid format: {v!r}; expected "json" or a JSON schema object', "format")


def format_to_wire(f: JsonFormat | None) -> str | JSONObject | None:
    if f is None:
        return None
    return f.schema if f.schema is not None else "json"


# Options the core models; everything else passes through untouched.
_OPTION_TYPES: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "num_predict": ("max_tokens", int),
    "temperature": ("temperature", (int, float)),
    "top_p": ("top_p", (int, float)),
    "top_k": ("top_k", int),
    "min_p": ("min_p", (int, float)),
    "seed": ("seed", int),
    "presence_penalty": ("presence_penalty", (int, float)),
    "frequency_penalty": ("frequency_penalty", (int, float)),
    "repeat_penalty": ("repeat_penalty", (int, float)),
    "num_ctx": ("num_ctx", int),
}


def options_from_wire(v: object) -> tuple[Sampling, JSONObject]:
    """Split `options` into the core's sampling values and pass-through extras.

    A wrong type is a 400 naming the option (Ollama answers 500, but it is the caller's
    mistake). `stop` may be a string as well as an array: the docs say either works.
    """
    if v is None:
        return Sampling(), {}
    if not isinstance(v, dict):
        raise wrong_type("options", "an object", v)
    values: dict[str, Any] = {}
    extra: JSONObject = {}
    for key, val in v.items():
        if key == "stop":
            if val is None:
                continue
            if isinstance(val, str):
                values["stop"] = (val,)
            elif isinstance(val, list) and all(isinstance(s, str) for s in val):
                values["stop"] = tuple(val)
            else:
                raise invalid('option "stop" must be of type array', "options.stop")
            continue
        spec = _OPTION_TYPES.get(key)
        if spec is None:
            extra[key] = val
            continue
        field, types = spec
        if val is None:
            continue
        integral = types is int and isinstance(val, float) and val.is_integer()
        if (isinstance(val, bool) or not isinstance(val, types)) and not integral:
            kind = "integer" if types is int else "number"
            raise invalid(f'option "{key}" must be of type {kind}', f"options.{key}")
        # Go's int is 64 bits: `num_predict: 1e308` is out of range, not "no limit".
        values[field] = bounded_int(val, f"options.{key}") if types is int else float(val)
    return Sampling(**values), extra


def options_to_wire(s: Sampling, extra: JSONObject) -> JSONObject:
    out: JSONObject = dict(extra)
    for wire_key, (field, _) in _OPTION_TYPES.items():
        val = getattr(s, field)
        if val is not None:
            out[wire_key] = val
    if s.stop is not None:
        out["stop"] = list(s.stop)
    return out


def _images_from_wire(v: object, path: str) -> tuple[Image, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise wrong_type(path, "an array of base64 strings", v)
    out: list[Image] = []
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise wrong_type(f"{path}[{i}]", "a base64 string", item)
        # Native images are raw base64; tolerate a data URL, which Ollama itself rejects.
        if item.startswith("data:"):
            head, _, data = item.partition(",")
            out.append(Image(data=data, mime=head[5:].split(";", 1)[0]))
        else:
            out.append(Image(data=item))
    return tuple(out)


_PLAIN_ROLES = {"system", "user", "assistant"}


def _message_from_wire(v: object, i: int) -> Message:
    if type(v) is dict and len(v) == 2:
        # Most messages are just a role and a text: no need to look for the rest.
        role, content = v.get("role"), v.get("content")
        if type(content) is str and type(role) is str and role in _PLAIN_ROLES:
            return Message(role=role, content=content)
    p = f"messages[{i}]"
    m = item_obj(v, p)
    role = opt_str(m, "role", f"{p}.role")
    if not role:
        raise invalid(f"'{p}.role' is required", f"{p}.role")
    content = m.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        raise wrong_type(f"{p}.content", "a string", content)
    return Message(
        role=role.lower(),
        content=content,
        images=_images_from_wire(m.get("images"), f"{p}.images"),
        tool_calls=tool_calls_from_wire(m.get("tool_calls"), f"{p}.tool_calls"),
        thinking=opt_str(m, "thinking", f"{p}.thinking") or "",
        tool_call_id=opt_str(m, "tool_call_id", f"{p}.tool_call_id") or "",
        tool_name=opt_str(m, "tool_name", f"{p}.tool_name") or "",
    )


def tool_calls_to_wire(calls: tuple[ToolCall, ...]) -> list[JSONObject]:
    out: list[JSONObject] = []
    for i, c in enumerate(calls):
        tc: JSONObject = {
            "function": {
                "index": c.index if c.index else i,
                "name": c.name,
                "arguments": c.arguments,
            }
        }
        if c.id:
            tc["id"] = c.id
        out.append(tc)
    return out


def _stream_flag(body: dict[str, Any]) -> bool:
    # Go's `Stream *bool`: absent (or null) means true.
    s = opt_bool(body, "stream")
    return True if s is None else s


# Fields of a native request the core does not model but an Ollama backend understands.
_CHAT_PASSTHROUGH = ("truncate", "shift", "logprobs", "top_logprobs")
_KNOWN_CHAT = {
    "model", "messages", "tools", "format", "options", "stream", "keep_alive", "think",
}  # fmt: skip


def _passthrough(body: dict[str, Any], keys: tuple[str, ...]) -> JSONObject:
    return {k: body[k] for k in keys if k in body}


# ---------------------------------------------------------------------------------------
# server side: requests from apps


def chat_request_from_wire(body: object) -> ChatRequest:
    b = body_object(body)
    model = require_model(b)
    raw_messages = opt_list(b, "messages") or []
    sampling, extra_options = options_from_wire(b.get("options"))
    return ChatRequest(
        model=model,
        messages=tuple(_message_from_wire(m, i) for i, m in enumerate(raw_messages)),
        stream=_stream_flag(b),
        tools=tools_from_wire(b.get("tools")),
        format=format_from_wire(b.get("format")),
        think=think_from_wire(b.get("think")),
        sampling=sampling,
        options=extra_options,
        keep_alive=keep_alive_from_wire(b.get("keep_alive")),
        extra=_passthrough(b, _CHAT_PASSTHROUGH),
        extra_dialect="ollama",
    )


def generate_request_from_wire(body: object) -> GenerateRequest:
    b = body_object(body)
    model = require_model(b)
    raw = opt_bool(b, "raw") or False
    if raw and (b.get("template") or b.get("system") or b.get("context")):
        raise invalid("raw mode does not support template, system, or context")
    sampling, extra_options = options_from_wire(b.get("options"))
    prompt = opt_str(b, "prompt") or ""
    return GenerateRequest(
        model=model,
        prompt=prompt,
        suffix=opt_str(b, "suffix") or "",
        system=opt_str(b, "system") or "",
        # An empty prompt loads the model, raw or not (Ollama's convention).
        raw=raw and bool(prompt),
        images=_images_from_wire(b.get("images"), "images"),
        stream=_stream_flag(b),
        format=format_from_wire(b.get("format")),
        think=think_from_wire(b.get("think")),
        sampling=sampling,
        options=extra_options,
        keep_alive=keep_alive_from_wire(b.get("keep_alive")),
        extra=_passthrough(b, ("template", "context", *_CHAT_PASSTHROUGH)),
        extra_dialect="ollama",
    )


def embed_request_from_wire(body: object, *, legacy: bool = False) -> EmbedRequest:
    """/api/embed (`input`: string or strings; unit vectors) or legacy /api/embeddings."""
    b = body_object(body)
    model = require_model(b)
    _, extra_options = options_from_wire(b.get("options"))
    if legacy:
        prompt = opt_str(b, "prompt") or ""
        inputs: tuple[str, ...] = (prompt,) if prompt else ()
    else:
        v = b.get("input")
        if v is None or v == "":
            inputs = ()
        elif isinstance(v, str):
            inputs = (v,)
        elif isinstance(v, list) and all(isinstance(s, str) for s in v):
            inputs = tuple(v)
        else:
            raise invalid("invalid input type", "input")
        # No input at all loads the model; an empty text among others has no embedding
        # (a model reads no tokens from it).
        for i, text in enumerate(inputs):
            if not text:
                raise invalid(f"invalid input: 'input[{i}]' is an empty string", f"input[{i}]")
    truncate = opt_bool(b, "truncate")
    dims = opt_int(b, "dimensions")
    if dims is not None and dims <= 0:
        raise invalid("dimensions must be a positive integer", "dimensions")
    return EmbedRequest(
        model=model,
        inputs=inputs,
        truncate=True if truncate is None else truncate,
        dimensions=dims,
        normalize=not legacy,
        options=extra_options,
        keep_alive=keep_alive_from_wire(b.get("keep_alive")),
    )


# ---------------------------------------------------------------------------------------
# server side: responses to apps


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def rfc3339(ns: int | None = None) -> str:
    """UTC time as Go marshals it: nanoseconds, trailing zeros trimmed.

    Every streamed line carries one, so the date part is formatted once a second.
    """
    if ns is None:
        ns = time.time_ns()
    global _second
    secs, frac = divmod(ns, 1_000_000_000)
    if _second[0] != secs:
        _second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    base = _second[1]
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return f"{base}Z"


def local_time(ts: float) -> str:
    """A local timestamp with its offset, as Ollama shows modified_at and expires_at."""
    return datetime.fromtimestamp(ts).astimezone().isoformat()


def done_reason(finish: FinishReason | None) -> str:
    # Native done_reason stays "stop" when the turn ended in tool calls.
    if finish is None or finish == "tool_calls" or finish == "content_filter":
        return "stop"
    return finish


def metrics_to_wire(out: JSONObject, usage: Usage | None, timings: Timings | None) -> None:
    t = timings or Timings()
    u = usage or Usage()
    out["total_duration"] = t.total_ns
    out["load_duration"] = t.load_ns
    out["prompt_eval_count"] = u.prompt_tokens
    out["prompt_eval_duration"] = t.prompt_eval_ns
    out["eval_count"] = u.completion_tokens
    out["eval_duration"] = t.eval_ns


def chat_response_to_wire(c: Chunk, model: str, created_at: str | None = None) -> JSONObject:
    """A whole (collected) chat answer, as `stream: false` returns it."""
    msg: JSONObject = {"role": "assistant", "content": c.content}
    if c.thinking:
        msg["thinking"] = c.thinking
    if c.tool_calls:
        msg["tool_calls"] = tool_calls_to_wire(c.tool_calls)
    out: JSONObject = {
        "model": model,
        "created_at": created_at or rfc3339(),
        "message": msg,
        "done": True,
        "done_reason": done_reason(c.finish),
    }
    metrics_to_wire(out, c.usage, c.timings)
    return out


def generate_response_to_wire(c: Chunk, model: str, created_at: str | None = None) -> JSONObject:
    out: JSONObject = {
        "model": model,
        "created_at": created_at or rfc3339(),
        "response": c.content,
    }
    if c.thinking:
        out["thinking"] = c.thinking
    out["done"] = True
    out["done_reason"] = done_reason(c.finish)
    if c.tool_calls:
        out["tool_calls"] = tool_calls_to_wire(c.tool_calls)
    metrics_to_wire(out, c.usage, c.timings)
    return out


def embed_response_to_wire(r: EmbedResult, model: str) -> JSONObject:
    return {
        "model": model,
        "embeddings": r.embeddings,
        "total_duration": r.total_ns,
        "load_duration": r.load_ns,
        "prompt_eval_count": r.prompt_tokens,
    }


def embeddings_legacy_response_to_wire(r: EmbedResult) -> JSONObject:
    return {"embedding": r.embeddings[0] if r.embeddings else []}


def details_to_wire(d: ModelDetails) -> JSONObject:
    return {
        "parent_model": d.parent_model,
        "format": d.format,
        "family": d.family,
        "families": list(d.families) if d.families else None,
        "parameter_size": d.parameter_size,
        "quantization_level": d.quantization_level,
    }


def tag_to_wire(name: str, card: ModelCard) -> JSONObject:
    return {
        "name": name,
        "model": name,
        "modified_at": local_time(card.modified_at or 0),
        "size": card.size,
        "digest": card.digest,
        "details": details_to_wire(card.details),
    }


def ps_to_wire(name: str, m: LoadedModel) -> JSONObject:
    # Go's zero time for "never" is not what clients parse; far future instead.
    expires = m.expires_at if m.expires_at is not None else time.time() + 10 * 365 * 86400
    return {
        "name": name,
        "model": name,
        "size": m.size,
        "digest": m.digest,
        "details": details_to_wire(m.details),
        "expires_at": local_time(expires),
        "size_vram": m.size_vram,
        "context_length": m.context_length or 0,
    }


def show_to_wire(s: ModelShow) -> JSONObject:
    out: JSONObject = {
        "license": s.license,
        "modelfile": s.modelfile,
        "parameters": s.parameters,
        "template": s.template,
        "system": s.system,
        "details": details_to_wire(s.card.details),
        # Always present: several integrations crash on a missing model_info.
        "model_info": s.model_info,
        "capabilities": list(s.capabilities),
        "modified_at": local_time(s.card.modified_at or 0),
    }
    for k, v in s.extra.items():
        out.setdefault(k, v)
    return out


# ---------------------------------------------------------------------------------------
# client side: requests to an Ollama backend


def _message_to_wire(m: Message) -> JSONObject:
    out: JSONObject = {"role": m.role, "content": m.content}
    if m.images:
        out["images"] = [i.data for i in m.images]
    if m.tool_calls:
        out["tool_calls"] = tool_calls_to_wire(m.tool_calls)
    if m.thinking:
        out["thinking"] = m.thinking
    if m.tool_name:
        out["tool_name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _common_to_wire(
    out: JSONObject,
    fmt: JsonFormat | None,
    think: Think | None,
    sampling: Sampling,
    options: JSONObject,
    keep_alive: KeepAlive | None,
) -> None:
    wire_format = format_to_wire(fmt)
    if wire_format is not None:
        out["format"] = wire_format
    opts = options_to_wire(sampling, options)
    if opts:
        out["options"] = opts
    if keep_alive is not None:
        out["keep_alive"] = keep_alive
    if think is not None:
        out["think"] = think


def chat_request_to_wire(r: ChatRequest, model: str, stream: bool) -> JSONObject:
    out: JSONObject = {
        "model": model,
        "messages": [_message_to_wire(m) for m in r.messages],
        "stream": stream,
    }
    if r.tools:
        out["tools"] = tools_to_wire(r.tools)
    _common_to_wire(out, r.format, r.think, r.sampling, r.options, r.keep_alive)
    if r.extra_dialect == "ollama":
        for k, v in r.extra.items():
            out.setdefault(k, v)
    return out


def generate_request_to_wire(r: GenerateRequest, model: str, stream: bool) -> JSONObject:
    out: JSONObject = {"model": model, "prompt": r.prompt, "stream": stream}
    if r.suffix:
        out["suffix"] = r.suffix
    if r.system:
        out["system"] = r.system
    if r.raw:
        out["raw"] = True
    if r.images:
        out["images"] = [i.data for i in r.images]
    _common_to_wire(out, r.format, r.think, r.sampling, r.options, r.keep_alive)
    if r.extra_dialect == "ollama":
        for k, v in r.extra.items():
            out.setdefault(k, v)
    return out


def embed_request_to_wire(r: EmbedRequest, model: str) -> JSONObject:
    out: JSONObject = {"model": model, "input": list(r.inputs), "truncate": r.truncate}
    if r.dimensions is not None:
        out["dimensions"] = r.dimensions
    if r.options:
        out["options"] = r.options
    if r.keep_alive is not None:
        out["keep_alive"] = r.keep_alive
    return out


# ---------------------------------------------------------------------------------------
# client side: what an Ollama backend answers


def error_message_from_wire(body: object) -> str | None:
    """The message of an Ollama error body (`{"error": "..."}`), or None if it is not one."""
    if not isinstance(body, dict) or "error" not in body:
        return None
    msg = body["error"]
    return msg if isinstance(msg, str) else str(msg)


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "load": "load",
    "unload": "unload",
}


def chunk_from_wire(obj: JSONObject, backend: str = "") -> Chunk:
    """One native chunk (chat or generate) as a core chunk; an error line raises."""
    failed = error_message_from_wire(obj)
    if failed is not None:
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{backend}' failed: {failed}" if backend else failed,
            backend=backend,
        )
    msg = obj.get("message")
    if isinstance(msg, dict):
        content = msg.get("content") or ""
        thinking = msg.get("thinking") or ""
        raw_calls = msg.get("tool_calls")
    else:
        content = obj.get("response") or ""
        thinking = obj.get("thinking") or ""
        raw_calls = obj.get("tool_calls")
    calls = tool_calls_from_wire(raw_calls, "tool_calls") if raw_calls else ()
    if not obj.get("done"):
        return Chunk(content=content, thinking=thinking, tool_calls=calls)
    reason = obj.get("done_reason")
    finish: FinishReason = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    return Chunk(
        content=content,
        thinking=thinking,
        tool_calls=calls,
        finish=finish,
        usage=Usage(
            prompt_tokens=as_int(obj.get("prompt_eval_count")),
            completion_tokens=as_int(obj.get("eval_count")),
        ),
        timings=Timings(
            total_ns=as_int(obj.get("total_duration")),
            load_ns=as_int(obj.get("load_duration")),
            prompt_eval_ns=as_int(obj.get("prompt_eval_duration")),
            eval_ns=as_int(obj.get("eval_duration")),
        ),
        model=obj.get("model") or "",
    )


def embed_result_from_wire(obj: JSONObject, model: str) -> EmbedResult:
    embs = obj.get("embeddings")
    if not isinstance(embs, list):
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED, f"backend answered embeddings of type {type_name(embs)}"
        )
    return EmbedResult(
        model=model,
        embeddings=embs,
        prompt_tokens=as_int(obj.get("prompt_eval_count")),
        total_ns=as_int(obj.get("total_duration")),
        load_ns=as_int(obj.get("load_duration")),
    )


def details_from_wire(v: object) -> ModelDetails:
    d = v if isinstance(v, dict) else {}
    fams = d.get("families")
    return ModelDetails(
        format=str(d.get("format") or ""),
        family=str(d.get("family") or ""),
        families=tuple(str(f) for f in fams) if isinstance(fams, list) else (),
        parameter_size=str(d.get("parameter_size") or ""),
        quantization_level=str(d.get("quantization_level") or ""),
        parent_model=str(d.get("parent_model") or ""),
    )


def parse_time(v: object) -> float:
    if not isinstance(v, str) or not v:
        return 0.0
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        # Nine fractional digits are fine on 3.11; anything odder is not worth failing on.
        return 0.0


def tags_from_wire(obj: JSONObject, backend: str) -> list[ModelCard]:
    models = obj.get("models") or []
    cards: list[ModelCard] = []
    for m in models:
        if not isinstance(m, dict):
            continue
        name = m.get("model") or m.get("name")
        if not isinstance(name, str) or not name:
            continue
        caps = m.get("capabilities")
        cards.append(
            ModelCard(
                name=name,
                backend=backend,
                size=as_int(m.get("size")),
                digest=str(m.get("digest") or ""),
                modified_at=parse_time(m.get("modified_at")),
                details=details_from_wire(m.get("details")),
                capabilities=tuple(caps) if isinstance(caps, list) else (),
                owned_by=backend,
            )
        )
    return cards


def ps_from_wire(obj: JSONObject, backend: str) -> list[LoadedModel]:
    out: list[LoadedModel] = []
    for m in obj.get("models") or []:
        if not isinstance(m, dict):
            continue
        name = m.get("model") or m.get("name")
        if not isinstance(name, str):
            continue
        exp = parse_time(m.get("expires_at"))
        out.append(
            LoadedModel(
                name=name,
                backend=backend,
                size=as_int(m.get("size")),
                size_vram=as_int(m.get("size_vram")),
                digest=str(m.get("digest") or ""),
                expires_at=exp or None,
                context_length=as_int(m.get("context_length")) or None,
                details=details_from_wire(m.get("details")),
            )
        )
    return out


def show_from_wire(obj: JSONObject, card: ModelCard) -> ModelShow:
    info = obj.get("model_info")
    caps = obj.get("capabilities")
    known = {
        "license", "modelfile", "parameters", "template", "system", "details",
        "model_info", "capabilities", "modified_at",
    }  # fmt: skip
    lic = obj.get("license")
    return ModelShow(
        card=ModelCard(
            name=card.name,
            backend=card.backend,
            size=card.size,
            digest=card.digest,
            modified_at=parse_time(obj.get("modified_at")) or card.modified_at,
            details=details_from_wire(obj.get("details")),
            capabilities=tuple(caps) if isinstance(caps, list) else card.capabilities,
        ),
        model_info=info if isinstance(info, dict) else {},
        capabilities=tuple(caps) if isinstance(caps, list) else card.capabilities,
        template=str(obj.get("template") or ""),
        parameters=str(obj.get("parameters") or ""),
        modelfile=str(obj.get("modelfile") or ""),
        license="\n".join(lic) if isinstance(lic, list) else str(lic or ""),
        system=str(obj.get("system") or ""),
        extra={k: v for k, v in obj.items() if k not in known},
    )


def error_to_wire(e: GatewayError) -> JSONObject:
    return {"error": e.message}
