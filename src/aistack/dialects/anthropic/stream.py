"""Anthropic Server-Sent Events: core chunks -> `event:`/`data:` pairs, and back.

What clients rely on (Claude Code, the SDKs): `message_start` first; each content block
opened by `content_block_start`, filled by deltas (`text_delta`, `thinking_delta`,
`signature_delta`, `input_json_delta` whose pieces concatenate to valid JSON) and
closed by `content_block_stop` (a client counts a block only once it is stopped);
then `message_delta` with the stop reason and usage, and `message_stop`. `ping` keeps
a quiet connection alive. A failure after the first byte is an `error` event, which
the SDKs raise.
"""

from __future__ import annotations

import orjson

from aistack.core.chat import JSONObject, ToolCall
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk, FinishReason, Usage
from aistack.dialects._fields import parse_arguments
from aistack.dialects.anthropic.convert import (
    error_message_from_wire,
    error_type_from_wire,
    finish_from_wire,
    new_id,
    stop_reason_to_wire,
    usage_from_wire,
    usage_to_wire,
)

_dumps = orjson.dumps

PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def event(name: bytes, obj: JSONObject) -> bytes:
    return b"event: " + name + b"\ndata: " + _dumps(obj) + b"\n\n"


def error_event(body: JSONObject) -> bytes:
    return event(b"error", body)


_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamEncoder:
    """Encodes one message stream. Blocks are opened as their kind of content arrives
    and closed when another kind starts (or a signature ends a thinking block)."""

    __slots__ = ("_block", "_index", "_input_tokens", "_mid", "_model", "_started", "_tools")

    def __init__(self, model: str, mid: str, input_tokens: int = 0) -> None:
        self._model = model
        self._mid = mid
        self._input_tokens = input_tokens
        self._started = False
        self._block = ""  # the open block's type, "" when none is open
        self._index = -1  # the last block's index
        self._tools = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> bytes:
        """`message_start`, once (an early start sends it before the first chunk)."""
        if self._started:
            return b""
        self._started = True
        return event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self._mid,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": self._input_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 0,
                    },
                },
            },
        )

    def _close(self) -> bytes:
        if not self._block:
            return b""
        self._block = ""
        return _STOP % self._index

    def _open(self, block: JSONObject) -> bytes:
        out = self._close()
        self._index += 1
        self._block = block["type"]
        return out + event(
            b"content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _delta(self, delta: JSONObject) -> bytes:
        return event(
            b"content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )

    def encode(self, c: Chunk) -> bytes:
        out = self.start() if not self._started else b""
        if c.thinking:
            if self._block != "thinking":
                out += self._open({"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": c.thinking})
        if c.signature:
            if self._block != "thinking":
                out += self._open({"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "signature_delta", "signature": c.signature})
            out += self._close()
        for data in c.redacted:
            out += self._open({"type": "redacted_thinking", "data": data})
            out += self._close()
        if c.content:
            if self._block != "text":
                out += self._open({"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": c.content})
        for call in c.tool_calls:
            out += self._tool_use(call)
        if c.finish is not None:
            out += self._end(c)
        return out

    def _tool_use(self, call: ToolCall) -> bytes:
        self._tools = True
        out = self._open(
            {"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name, "input": {}}
        )
        args = _dumps(call.arguments).decode()
        out += self._delta({"type": "input_json_delta", "partial_json": args})
        return out + self._close()

    def _end(self, c: Chunk) -> bytes:
        out = b""
        if self._index < 0:
            # Clients that see no block at all fall back to a non-streamed request.
            out += self._open({"type": "text", "text": ""})
        out += self._close()
        usage = usage_to_wire(c.usage)
        out += event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason_to_wire(c, self._tools),
                    "stop_sequence": None,
                },
                "usage": usage,
            },
        )
        return out + _MESSAGE_STOP


class StreamDecoder:
    """Reads an Anthropic backend's events into core chunks.

    Tool input fragments are joined per block and emitted whole when the block stops;
    the final chunk comes with `message_stop` (usage from message_start, updated by
    message_delta).
    """

    __slots__ = ("_backend", "_finish", "_json", "_model", "_tool", "_usage", "done")

    def __init__(self, backend: str = "") -> None:
        self._backend = backend
        self._model = ""
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None
        self._tool: tuple[str, str] | None = None  # the open tool_use block: id, name
        self._json: list[str] = []
        self.done = False

    def feed(self, name: str, obj: JSONObject) -> Chunk | None:
        kind = obj.get("type", name)
        if kind == "content_block_delta":
            d = obj.get("delta")
            if not isinstance(d, dict):
                return None
            dt = d.get("type")
            if dt == "text_delta":
                return Chunk(content=str(d.get("text") or ""))
            if dt == "thinking_delta":
                return Chunk(thinking=str(d.get("thinking") or ""))
            if dt == "signature_delta":
                return Chunk(signature=str(d.get("signature") or ""))
            if dt == "input_json_delta":
                self._json.append(str(d.get("partial_json") or ""))
            return None
        if kind == "content_block_start":
            b = obj.get("content_block")
            if not isinstance(b, dict):
                return None
            bt = b.get("type")
            if bt == "tool_use":
                self._tool = (str(b.get("id") or ""), str(b.get("name") or ""))
                self._json = []
                inp = b.get("input")
                if isinstance(inp, dict) and inp:
                    self._json.append(_dumps(inp).decode())
            elif bt == "redacted_thinking":
                return Chunk(redacted=(str(b.get("data") or ""),))
            elif bt == "text" and b.get("text"):
                return Chunk(content=str(b["text"]))
            return None
        if kind == "content_block_stop":
            if self._tool is None:
                return None
            cid, tool = self._tool
            self._tool = None
            args = parse_arguments("".join(self._json), "tool_use.input")
            self._json = []
            call = ToolCall(
                name=tool, arguments=args if isinstance(args, dict) else {"value": args}, id=cid
            )
            return Chunk(tool_calls=(call,))
        if kind == "message_start":
            m = obj.get("message")
            if isinstance(m, dict):
                self._model = str(m.get("model") or "")
                self._usage = usage_from_wire(m.get("usage"))
            return None
        if kind == "message_delta":
            d = obj.get("delta")
            if isinstance(d, dict) and d.get("stop_reason"):
                self._finish = finish_from_wire(d["stop_reason"])
            self._usage = usage_from_wire(obj.get("usage"), self._usage)
            return None
        if kind == "message_stop":
            self.done = True
            return self.end()
        if kind == "error":
            etype = error_type_from_wire(obj)
            # Overloaded: unavailable for now (503); anything else: it failed (502).
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR
                if etype == "overloaded_error"
                else ErrorKind.UPSTREAM_FAILED,
                f"backend '{self._backend}' failed mid-stream: "
                f"{error_message_from_wire(obj)}" + (f" ({etype})" if etype else ""),
                backend=self._backend,
            )
        return None  # ping, and events added later

    def end(self) -> Chunk:
        """The final chunk; raises if the stream ended before message_delta said why."""
        if self._finish is None:
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self._backend}' ended the stream before finishing",
                backend=self._backend,
            )
        return Chunk(finish=self._finish, usage=self._usage, model=self._model)
