"""The hub's request values: what every dialect decodes into and every backend encodes from.

Frozen and typed, with no I/O and no wire knowledge. Where the two dialects disagree
(tool arguments as an object or a string, images as raw base64 or data URLs, `think`
or `reasoning_effort`), the core picks one form and the dialects convert at the edge:
tool arguments are JSON objects, images are raw base64 plus a MIME type, thinking is
`bool | effort-level`.

Reasoning a model showed comes back in two forms: `Message.thinking`, its plain text
(what Ollama and OpenAI-compatible servers take), and `Message.reasoning`, the blocks
with the opaque token their backend needs to see again (Anthropic's signed and redacted
thinking blocks, OpenAI's encrypted reasoning items). Backends that cannot use a token
drop it; the core never looks inside one.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JSONObject = dict[str, Any]

ThinkLevel = Literal["low", "medium", "high", "max"]
Think = bool | ThinkLevel


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """An image attached to a message: raw base64 (no `data:` prefix) and its MIME type."""

    data: str
    mime: str = ""


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call the model asked for. `arguments` is always an object in the core."""

    name: str
    arguments: JSONObject
    id: str = ""
    index: int = 0


class Reasoning(msgspec.Struct, frozen=True, kw_only=True):
    """One block of reasoning as its backend gave it: the text shown (may be empty) and
    the opaque token that proves it (`signature`), or, when `redacted`, only the token."""

    text: str = ""
    signature: str = ""
    redacted: bool = False
    id: str = ""  # the item id a dialect gave it (OpenAI Responses), echoed back


class Message(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    content: str = ""
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str = ""
    # The reasoning blocks an assistant turn carried, with their tokens, in order.
    reasoning: tuple[Reasoning, ...] = ()
    # On role "tool": which call this answers, by id (OpenAI) and/or name (Ollama), and
    # whether the tool failed (Anthropic's is_error).
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call; `parameters` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: JSONObject = msgspec.field(default_factory=dict)


class ToolChoice(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the model must call a tool: auto, none, required (Anthropic's `any`), or
    one named function (Anthropic's `tool`)."""

    mode: Literal["auto", "none", "required", "function"]
    name: str = ""


class JsonFormat(msgspec.Struct, frozen=True, kw_only=True):
    """Structured output: any JSON object (`schema is None`) or one matching a schema."""

    schema: JSONObject | None = None
    name: str = ""
    strict: bool | None = None
    # Where the caller's request holds the schema (`format`,
    # `response_format.json_schema.schema`, ...): what an error about it names.
    path: str = "format"


class Sampling(msgspec.Struct, frozen=True, kw_only=True):
    """Generation parameters both dialects share. None means: the backend's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None


NO_SAMPLING = Sampling()

# Seconds (a number; negative means forever) or a Go duration string ("5m", "-1s").
KeepAlive = float | str


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: tuple[Message, ...]
    stream: bool = True
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    # False: at most one tool call per turn (OpenAI's parallel_tool_calls, Anthropic's
    # disable_parallel_tool_use); None: the backend's default.
    parallel_tool_calls: bool | None = None
    format: JsonFormat | None = None
    think: Think | None = None
    sampling: Sampling = NO_SAMPLING
    # Backend options the core does not model (Ollama's num_batch, mirostat, ...):
    # passed through to backends that understand them, never rejected.
    options: JSONObject = msgspec.field(default_factory=dict)
    keep_alive: KeepAlive | None = None
    include_usage: bool = False
    user: str = ""
    # Fields of the caller's dialect the core does not model (OpenRouter's `provider`,
    # Ollama's `truncate`, Anthropic's `cache_control`): forwarded only to backends
    # speaking `extra_dialect`.
    extra: JSONObject = msgspec.field(default_factory=dict)
    extra_dialect: str = ""
    # Headers of the caller's dialect for backends speaking it (Anthropic's
    # anthropic-beta), lower-case names.
    headers: tuple[tuple[str, str], ...] = ()


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A single-prompt completion: Ollama's /api/generate and OpenAI's /v1/completions.

    `raw` means the prompt is sent as-is, with no chat template (OpenAI completions and
    Ollama's raw mode); otherwise `system` and `prompt` are a one-turn chat.
    """

    model: str
    prompt: str
    suffix: str = ""
    system: str = ""
    raw: bool = False
    images: tuple[Image, ...] = ()
    stream: bool = True
    format: JsonFormat | None = None
    think: Think | None = None
    sampling: Sampling = NO_SAMPLING
    options: JSONObject = msgspec.field(default_factory=dict)
    keep_alive: KeepAlive | None = None
    include_usage: bool = False
    user: str = ""
    extra: JSONObject = msgspec.field(default_factory=dict)
    extra_dialect: str = ""

    def as_chat(self) -> ChatRequest:
        """The templated form: system + one user turn, for backends that only chat.

        An empty prompt is Ollama's "load the model", whatever else is set: a chat
        without messages, which every backend answers with `finish="load"`."""
        messages: list[Message] = []
        if self.prompt:
            if self.system:
                messages.append(Message(role="system", content=self.system))
            messages.append(Message(role="user", content=self.prompt, images=self.images))
        return ChatRequest(
            model=self.model,
            messages=tuple(messages),
            stream=self.stream,
            format=self.format,
            think=self.think,
            sampling=self.sampling,
            options=self.options,
            keep_alive=self.keep_alive,
            include_usage=self.include_usage,
            user=self.user,
            extra=self.extra,
            extra_dialect=self.extra_dialect,
        )


class EmbedRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    inputs: tuple[str, ...]
    truncate: bool = True
    dimensions: int | None = None
    # /api/embed and /v1/embeddings return unit vectors; legacy /api/embeddings does not.
    normalize: bool = True
    options: JSONObject = msgspec.field(default_factory=dict)
    keep_alive: KeepAlive | None = None
    user: str = ""


class EmbedResult(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    embeddings: list[list[float]]
    prompt_tokens: int = 0
    total_ns: int = 0
    load_ns: int = 0


InferenceRequest = ChatRequest | GenerateRequest

_json = msgspec.json.Encoder()


def estimate_tokens(r: ChatRequest) -> int:
    """About four characters a token over everything the model reads (messages, tool
    calls, tool definitions): the stated estimate where a backend has no tokenizer."""
    chars = 0
    for m in r.messages:
        chars += len(m.content) + len(m.thinking) + 4
        for c in m.tool_calls:
            chars += len(c.name) + len(_json.encode(c.arguments))
    for t in r.tools:
        chars += len(t.name) + len(t.description) + len(_json.encode(t.parameters))
    return max(1, chars // 4)


def unit(v: list[float]) -> list[float]:
    """A vector scaled to length 1 (embeddings are compared by angle); zero stays zero."""
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v] if norm else v
