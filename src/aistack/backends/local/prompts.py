"""What the embedded model reads: the chat rendered by its own template, the note that
lists the tools it must call, and the sampling settings.

The model is far too small to decide on its own whether to call a tool, so on a user
turn with tools offered (and tool_choice not "none") its output is constrained by a
grammar to one call of an offered tool; after a tool result it answers in text.
"""

from __future__ import annotations

from typing import Any

import orjson

from aistack.backends.local.models import Models
from aistack.core.chat import ChatRequest, JsonFormat, Message, Sampling
from aistack.core.errors import ErrorKind, GatewayError, invalid


def chat_prompt(models: Models, llm: Any, req: ChatRequest) -> tuple[str, dict[str, Any] | None]:
    """The prompt the model reads for `req`, and the schema of the tool call it must
    make (None when it answers freely)."""
    messages = list(req.messages)
    force_tool = _wants_tool_call(req)
    schema: dict[str, Any] | None = None
    if force_tool:
        tools = [
            t
            for t in req.tools
            if req.tool_choice is None
            or req.tool_choice.mode != "function"
            or t.name == req.tool_choice.name
        ]
        if not tools:
            raise invalid(
                f"tool_choice names an unknown tool '{req.tool_choice.name}'",  # type: ignore[union-attr]
                "tool_choice",
            )
        listing = orjson.dumps(
            [
                {"name": t.name, "description": t.description, "parameters": t.parameters}
                for t in tools
            ]
        ).decode()
        note = (
            "You can call these functions: " + listing + "\nTo call one, reply with a "
            'JSON object {"name": <function name>, "arguments": <object>}.'
        )
        messages = _with_system(messages, note)
        schema = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": t.name},
                        "arguments": t.parameters or {"type": "object"},
                    },
                    "required": ["name", "arguments"],
                }
                for t in tools
            ]
        }
    return render(models, llm, messages), schema


def render(models: Models, llm: Any, messages: list[Message]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = models.metadata.get("tokenizer.chat_template")
    if not template:
        raise GatewayError(ErrorKind.INTERNAL, "the embedded model has no chat template")
    # Built once per model: compiling the template took 20 ms a request on this
    # machine (the embedded engine's whole TTFT overhead), rendering 0.2 ms.
    fmt = models.formatter
    if fmt is None or fmt[0] is not llm:
        eos = llm._model.token_get_text(llm.token_eos())
        bos = llm._model.token_get_text(llm.token_bos())
        fmt = models.formatter = (
            llm,
            Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos),
        )
    wire = [{"role": m.role, "content": _text_of(m)} for m in messages]
    return str(fmt[1](messages=wire).prompt)  # type: ignore[arg-type]  # TypedDicts


def _wants_tool_call(req: ChatRequest) -> bool:
    if not req.tools or not req.messages:
        return False
    tc = req.tool_choice
    if tc is not None and tc.mode == "none":
        return False
    if tc is not None and tc.mode in ("required", "function"):
        return req.messages[-1].role != "tool" or tc.mode == "function"
    return req.messages[-1].role == "user"


def _with_system(messages: list[Message], note: str) -> list[Message]:
    if messages and messages[0].role == "system":
        first = messages[0]
        return [Message(role="system", content=f"{first.content}\n\n{note}"), *messages[1:]]
    return [Message(role="system", content=note), *messages]


def _text_of(m: Message) -> str:
    if m.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
        rendered = orjson.dumps(calls[0] if len(calls) == 1 else calls).decode()
        return f"{m.content}\n{rendered}".strip()
    if m.role == "tool" and m.tool_name:
        return f"{m.tool_name} returned: {m.content}"
    return m.content


def format_schema(f: JsonFormat | None) -> dict[str, Any] | str | None:
    if f is None:
        return None
    return f.schema if f.schema is not None else "json"


def sampling_kwargs(s: Sampling) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    # Ollama's defaults where the caller says nothing.
    kw["temperature"] = 0.8 if s.temperature is None else s.temperature
    kw["top_p"] = 0.9 if s.top_p is None else s.top_p
    # llama.cpp's top_k and seed are 32 bits.
    kw["top_k"] = 40 if s.top_k is None else max(-(2**31), min(s.top_k, 2**31 - 1))
    if s.min_p is not None:
        kw["min_p"] = s.min_p
    if s.seed is not None and s.seed >= 0:
        kw["seed"] = s.seed & 0xFFFFFFFF
    if s.stop:
        kw["stop"] = list(s.stop)
    if s.presence_penalty is not None:
        kw["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        kw["frequency_penalty"] = s.frequency_penalty
    if s.repeat_penalty is not None:
        kw["repeat_penalty"] = s.repeat_penalty
    return kw
