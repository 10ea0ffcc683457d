"""The hub's response values: a response is a stream of chunks; the last one says why it ended.

A non-streamed response is the same stream collected into one chunk (`collect`), so
backends and dialects have one code path for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from aistack.core.chat import ToolCall

# "load"/"unload" are Ollama's answers to an empty prompt; "error" ends a stream that
# failed after its first byte.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "load", "unload"]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Cost in USD when the backend reports it (OpenRouter's usage.cost).
    cost: float | None = None
    # Of prompt_tokens: read from the backend's prompt cache, and written to it.
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    # True when the gateway counted the tokens because the backend did not say.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    """Ollama's duration fields, in integer nanoseconds."""

    total_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of a response. Only the final chunk has `finish` set.

    `signature` closes the thinking shown so far with its backend's token (Anthropic's
    signature, OpenAI's encrypted reasoning); `redacted` holds whole reasoning blocks the
    backend showed only as tokens. Dialects that have no place for them drop them.
    """

    content: str = ""
    thinking: str = ""
    signature: str = ""
    redacted: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    finish: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    # The model that actually answered, as the backend named it (empty if unknown).
    model: str = ""


def collect(chunks: Iterable[Chunk]) -> Chunk:
    """Fold a stream into one chunk: text concatenated, tool calls appended, last finish wins.

    Tool calls are collected from every chunk, including the final one (some Ollama
    parsers put them there). A whole answer keeps one thinking block: the last
    signature wins.
    """
    content: list[str] = []
    thinking: list[str] = []
    signature = ""
    redacted: list[str] = []
    calls: list[ToolCall] = []
    finish: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    model = ""
    for c in chunks:
        if c.content:
            content.append(c.content)
        if c.thinking:
            thinking.append(c.thinking)
        if c.signature:
            signature = c.signature
        if c.redacted:
            redacted.extend(c.redacted)
        if c.tool_calls:
            calls.extend(c.tool_calls)
        if c.finish is not None:
            finish = c.finish
        if c.usage is not None:
            usage = c.usage
        if c.timings is not None:
            timings = c.timings
        if c.model:
            model = c.model
    if calls and finish == "stop":
        finish = "tool_calls"
    return Chunk(
        content="".join(content),
        thinking="".join(thinking),
        signature=signature,
        redacted=tuple(redacted),
        tool_calls=tuple(calls),
        finish=finish or "stop",
        usage=usage,
        timings=timings,
        model=model,
    )
