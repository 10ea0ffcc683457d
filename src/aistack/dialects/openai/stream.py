"""OpenAI Server-Sent Events: core chunks -> `data:` events, and back.

What clients rely on: the role arrives on the first delta; reasoning and content go in
separate deltas; tool calls carry an index; a separate finish chunk with an empty delta;
with `stream_options.include_usage` a usage chunk with `choices: []`; then
`data: [DONE]`. A failure after the first byte is an `error` event and no `[DONE]`, so
clients raise instead of reading a truncated answer as complete.
"""

from __future__ import annotations

from typing import Literal

import orjson

from aistack.core.chat import JSONObject, ToolCall
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk, FinishReason, Usage
from aistack.dialects._fields import parse_arguments
from aistack.dialects.openai.convert import (
    error_message_from_wire,
    finish_from_wire,
    tool_calls_to_wire,
    usage_from_wire,
    usage_to_wire,
)

_dumps = orjson.dumps
DONE = b"data: [DONE]\n\n"


def error_event(body: JSONObject) -> bytes:
    return b"data: " + _dumps(body) + b"\n\n"


class StreamEncoder:
    """Encodes one chat (`chat.completion.chunk`) or completion (`text_completion`) stream."""

    __slots__ = ("_calls_sent", "_include_usage", "_kind", "_prefix", "_started", "_suffix")

    def __init__(
        self,
        model: str,
        rid: str,
        created: int,
        include_usage: bool,
        kind: Literal["chat", "completion"] = "chat",
    ) -> None:
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        # Every event shares this head; only the delta and finish_reason vary.
        self._prefix = (
            b'data: {"id":'
            + _dumps(rid)
            + b',"object":"'
            + obj.encode()
            + b'","created":'
            + str(created).encode()
            + b',"model":'
            + _dumps(model)
            + b',"system_fingerprint":"fp_aistack","choices":'
        )
        self._suffix = b"}\n\n"
        self._kind = kind
        self._include_usage = include_usage
        self._started = False
        self._calls_sent = 0

    def _event(self, delta: JSONObject | None, text: str, finish: str | None) -> bytes:
        if self._kind == "chat":
            choice: JSONObject = {"index": 0, "delta": delta or {}, "finish_reason": finish}
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return self._prefix + _dumps([choice]) + self._suffix

    def _delta(self, d: JSONObject) -> JSONObject:
        if not self._started:
            self._started = True
            return {"role": "assistant", **d}
        return d

    def encode(self, c: Chunk) -> bytes:
        out = b""
        if self._kind == "completion":
            if c.content:
                out += self._event(None, c.content, None)
        else:
            if c.thinking:
                out += self._event(self._delta({"reasoning": c.thinking}), "", None)
            if c.content:
                out += self._event(self._delta({"content": c.content}), "", None)
            if c.tool_calls:
                calls = tool_calls_to_wire(c.tool_calls, with_index=True)
                for call in calls:
                    call["index"] += self._calls_sent
                self._calls_sent += len(calls)
                out += self._event(self._delta({"tool_calls": calls}), "", None)
            if c.finish is not None and not self._started:
                out += self._event(self._delta({"content": ""}), "", None)
        if c.finish is not None:
            finish = "tool_calls" if self._calls_sent else _finish(c.finish)
            out += self._event({}, "", finish)
            if self._include_usage:
                out += self._prefix + b'[],"usage":' + _dumps(usage_to_wire(c.usage)) + self._suffix
            out += DONE
        return out


def _finish(f: FinishReason) -> str:
    return f if f in ("length", "tool_calls", "content_filter") else "stop"


class StreamDecoder:
    """Reads a backend's SSE `data:` objects into core chunks.

    Tool-call argument fragments are joined and emitted whole when the backend finishes
    the turn (native clients need whole calls). The final chunk is held until the
    stream ends, because the usage chunk arrives after the finish chunk.
    """

    __slots__ = ("_backend", "_calls", "_finish", "_kind", "_model", "_usage")

    def __init__(self, backend: str = "", kind: Literal["chat", "completion"] = "chat") -> None:
        self._backend = backend
        self._kind = kind
        self._calls: dict[int, list[str]] = {}
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._model = ""

    @property
    def finished(self) -> bool:
        return self._finish is not None

    def feed(self, obj: JSONObject) -> Chunk | None:
        if "error" in obj and not obj.get("choices"):
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self._backend}' failed mid-stream: {error_message_from_wire(obj)}",
                backend=self._backend,
            )
        if not self._model and isinstance(obj.get("model"), str):
            self._model = obj["model"]
        usage = usage_from_wire(obj.get("usage"))
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            self._usage = usage
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        ch = choices[0]
        content = ""
        thinking = ""
        if self._kind == "chat":
            delta = ch.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content") or ""
                thinking = delta.get("reasoning") or delta.get("reasoning_content") or ""
                self._add_calls(delta.get("tool_calls"))
        else:
            content = ch.get("text") or ""
        calls: tuple[ToolCall, ...] = ()
        if ch.get("finish_reason"):
            self._finish = finish_from_wire(ch["finish_reason"])
            calls = self._take_calls()
        if content or thinking or calls:
            return Chunk(
                content=content if isinstance(content, str) else "",
                thinking=thinking if isinstance(thinking, str) else "",
                tool_calls=calls,
            )
        return None

    def _add_calls(self, v: object) -> None:
        if not isinstance(v, list):
            return
        for i, tc in enumerate(v):
            if not isinstance(tc, dict):
                continue
            idx = tc.get("index")
            idx = idx if isinstance(idx, int) else i
            parts = self._calls.setdefault(idx, ["", "", ""])  # id, name, arguments
            if isinstance(tc.get("id"), str) and tc["id"]:
                parts[0] = tc["id"]
            fn = tc.get("function")
            if isinstance(fn, dict):
                if isinstance(fn.get("name"), str) and fn["name"]:
                    parts[1] += fn["name"] if not parts[1] else ""
                args = fn.get("arguments")
                if isinstance(args, str):
                    parts[2] += args
                elif isinstance(args, dict):
                    parts[2] = orjson.dumps(args).decode()

    def _take_calls(self) -> tuple[ToolCall, ...]:
        calls: list[ToolCall] = []
        for n, idx in enumerate(sorted(self._calls)):
            cid, name, args = self._calls[idx]
            parsed = parse_arguments(args, "tool_calls.function.arguments")
            calls.append(
                ToolCall(
                    name=name,
                    arguments=parsed if isinstance(parsed, dict) else {"value": parsed},
                    id=cid,
                    index=n,
                )
            )
        self._calls.clear()
        return tuple(calls)

    def end(self) -> Chunk:
        """The final chunk, once the stream is over; raises if it never finished."""
        if self._finish is None:
            if self._calls:
                self._finish = "tool_calls"
                return Chunk(tool_calls=self._take_calls(), finish="tool_calls", usage=self._usage)
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self._backend}' ended the stream before finishing",
                backend=self._backend,
            )
        return Chunk(finish=self._finish, usage=self._usage, model=self._model)
