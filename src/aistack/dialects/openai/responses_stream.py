"""Responses API Server-Sent Events: core chunks -> `event:`/`data:` pairs.

The order clients rely on (Codex, the SDKs' `responses.stream`): `response.created`,
`response.in_progress`; per output item `response.output_item.added`, its parts and
deltas, then `response.output_item.done` with the whole item; then
`response.completed` (also for a cut answer: see `_end`) with the whole response and usage
including `total_tokens`; then the stream ends (no `[DONE]`). Every event carries a
`sequence_number`. A failure after the first byte is `response.failed` and an `error`
event (which the SDKs raise).
"""

from __future__ import annotations

import orjson

from aistack.core.chat import JSONObject
from aistack.core.events import Chunk
from aistack.dialects.openai.convert import new_id
from aistack.dialects.openai.responses import (
    call_item,
    finish_response,
    message_item,
    reasoning_item,
)

_dumps = orjson.dumps

# An SSE comment: ignored by every parser, keeps a quiet connection open.
KEEPALIVE = b": keep-alive\n\n"


class StreamEncoder:
    """Encodes one response stream; `response` is the final object once it ended."""

    __slots__ = ("_base", "_item", "_kind", "_output", "_seq", "_started", "_text", "response")

    def __init__(self, base: JSONObject) -> None:
        self._base = base
        self._seq = 0
        self._started = False
        self._output: list[JSONObject] = []  # items done
        self._kind = ""  # the open item's type
        self._item: JSONObject = {}
        self._text: list[str] = []
        self.response: JSONObject | None = None

    @property
    def started(self) -> bool:
        return self._started

    def _event(self, kind: str, obj: JSONObject) -> bytes:
        obj = {"type": kind, "sequence_number": self._seq, **obj}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("response.created", {"response": self._base}) + self._event(
            "response.in_progress", {"response": self._base}
        )

    def _where(self) -> JSONObject:
        return {"item_id": self._item["id"], "output_index": len(self._output)}

    def _open(self, kind: str, item: JSONObject) -> bytes:
        out = self._close()
        self._kind = kind
        self._item = item
        self._text = []
        out += self._event(
            "response.output_item.added", {"output_index": len(self._output), "item": item}
        )
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added", {**self._where(), "content_index": 0, "part": part}
            )
        elif kind == "reasoning":
            out += self._event(
                "response.reasoning_summary_part.added",
                {**self._where(), "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
            )
        return out

    def _close(self, token: str = "") -> bytes:
        kind = self._kind
        if not kind:
            return b""
        text = "".join(self._text)
        where = self._where()
        out = b""
        if kind == "message":
            item = message_item(self._item["id"], text)
            part = item["content"][0]
            out += self._event(
                "response.output_text.done",
                {**where, "content_index": 0, "text": text, "logprobs": []},
            )
            out += self._event(
                "response.content_part.done", {**where, "content_index": 0, "part": part}
            )
        elif kind == "reasoning":
            item = reasoning_item(self._item["id"], text, token)
            part = {"type": "summary_text", "text": text}
            out += self._event(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            out += self._event(
                "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}
            )
        else:
            item = self._item
        out += self._event(
            "response.output_item.done", {"output_index": len(self._output), "item": item}
        )
        self._output.append(item)
        self._kind = ""
        return out

    def encode(self, c: Chunk) -> bytes:
        out = self.start() if not self._started else b""
        if c.thinking:
            if self._kind != "reasoning":
                out += self._open("reasoning", reasoning_item(new_id("rs"), "", ""))
            self._text.append(c.thinking)
            out += self._event(
                "response.reasoning_summary_text.delta",
                {**self._where(), "summary_index": 0, "delta": c.thinking},
            )
        if c.signature:
            if self._kind != "reasoning":
                out += self._open("reasoning", reasoning_item(new_id("rs"), "", ""))
            out += self._close(c.signature)
        for data in c.redacted:
            out += self._open("reasoning", reasoning_item(new_id("rs"), "", ""))
            out += self._close(data)
        if c.content:
            if self._kind != "message":
                out += self._open("message", message_item(new_id("msg"), "", "in_progress"))
            self._text.append(c.content)
            out += self._event(
                "response.output_text.delta",
                {**self._where(), "content_index": 0, "delta": c.content, "logprobs": []},
            )
        for call in c.tool_calls:
            done = call_item(new_id("fc"), call)
            added = {**done, "status": "in_progress", "arguments": ""}
            out += self._open("function_call", added)
            self._item = done
            where = self._where()
            args = done["arguments"]
            out += self._event("response.function_call_arguments.delta", {**where, "delta": args})
            out += self._event(
                "response.function_call_arguments.done",
                {**where, "name": call.name, "arguments": args},
            )
            out += self._close()
        if c.finish is not None:
            out += self._end(c)
        return out

    def _end(self, c: Chunk) -> bytes:
        out = b""
        if not self._output and not self._kind:
            # An empty answer is still one (empty) message, as OpenAI sends it.
            out += self._open("message", message_item(new_id("msg"), "", "in_progress"))
        out += self._close()
        done = finish_response(self._base, self._output, c)
        self.response = done
        # Always `response.completed`, its status saying "incomplete" when the answer was
        # cut (max_output_tokens): OpenAI sends `response.incomplete` there, which the
        # SDKs' stream helpers and Codex take for a failed stream and retry.
        return out + self._event("response.completed", {"response": done})

    def failed(self, error: JSONObject) -> bytes:
        """The end of a stream that broke: `response.failed`, then an `error` event the
        SDKs raise (its `error` object is what they read)."""
        out = self.start() if not self._started else b""
        failed = {
            **self._base,
            "status": "failed",
            "output": self._output,
            "error": {"code": error.get("code") or "server_error", "message": error["message"]},
        }
        self.response = failed
        out += self._event("response.failed", {"response": failed})
        return out + self._event(
            "error",
            {
                "code": error.get("code"),
                "message": error["message"],
                "param": error.get("param"),
                "error": error,
            },
        )
