"""Native NDJSON streams: core chunks -> the lines an Ollama client reads.

Framing rules clients depend on: one compact JSON object per line, `\\n`-terminated,
no blank lines; metrics only on the final `done: true` line; an error after the
first byte is a last `{"error": ...}` line with no `done` line after it.
"""

from __future__ import annotations

from typing import Literal

import orjson

from aistack.core.chat import JSONObject
from aistack.core.events import Chunk
from aistack.dialects.ollama.convert import (
    done_reason,
    metrics_to_wire,
    rfc3339,
    tool_calls_to_wire,
)

_dumps = orjson.dumps


def _line(obj: JSONObject) -> bytes:
    return _dumps(obj) + b"\n"


def error_line(message: str) -> bytes:
    return _line({"error": message})


class StreamEncoder:
    """Encodes a chat (`message`) or generate (`response`) stream, chunk by chunk.

    The model echoes the name the caller asked for, as Ollama does.
    """

    __slots__ = ("_kind", "_model")

    def __init__(self, model: str, kind: Literal["chat", "generate"] = "chat") -> None:
        self._model = model
        self._kind = kind

    def _body(self, content: str, thinking: str, calls: JSONObject | None) -> JSONObject:
        out: JSONObject = {"model": self._model, "created_at": rfc3339()}
        if self._kind == "chat":
            msg: JSONObject = {"role": "assistant", "content": content}
            if thinking:
                msg["thinking"] = thinking
            if calls is not None:
                msg["tool_calls"] = calls["tool_calls"]
            out["message"] = msg
        else:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
            if calls is not None:
                out["tool_calls"] = calls["tool_calls"]
        return out

    def encode(self, c: Chunk) -> bytes:
        calls = {"tool_calls": tool_calls_to_wire(c.tool_calls)} if c.tool_calls else None
        if c.finish is None:
            body = self._body(c.content, c.thinking, calls)
            body["done"] = False
            return _line(body)
        lines = b""
        if c.content or c.thinking or calls is not None:
            # Content and tool calls go in a done:false line, then a bare final line:
            # clients that only read `message` on non-final chunks still see them.
            body = self._body(c.content, c.thinking, calls)
            body["done"] = False
            lines = _line(body)
        final = self._body("", "", None)
        final["done"] = True
        final["done_reason"] = done_reason(c.finish)
        metrics_to_wire(final, c.usage, c.timings)
        return lines + _line(final)
