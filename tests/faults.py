"""Small local servers for faults real backends cannot be made to show on demand.

Each runs an asyncio server on its own thread and speaks just enough HTTP/1.1 to play
one part: silence, a stream cut mid-way, a 429 with Retry-After, slow bytes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The request line, headers and body; None if the client went away."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head + body


def response_head(
    status: int, ctype: bytes, extra: bytes = b"", length: int | None = None
) -> bytes:
    reason = {200: b"OK", 429: b"Too Many Requests", 503: b"Service Unavailable"}.get(
        status, b"Error"
    )
    h = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n" % (status, reason, ctype)
    if length is None:
        h += b"transfer-encoding: chunked\r\n"
    else:
        h += b"content-length: %d\r\n" % length
    return h + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class FaultServer:
    handler: Handler
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    disconnects: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    return
                self.requests.append(req)
                await self.handler(reader, writer, req)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnects += 1
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    def start(self) -> FaultServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._stopping = asyncio.Event()
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                await self._stopping.wait()
                self._server.close()
                me = asyncio.current_task()
                rest = [t for t in asyncio.all_tasks() if t is not me]
                for t in rest:
                    t.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(5)


# -- handlers


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
    """Accepts the request and never answers (until the client gives up)."""
    await reader.read()  # returns when the client closes


def ollama_cut_stream(lines: int = 2) -> Handler:
    """Answers /api/chat with a few NDJSON lines, then drops the connection."""

    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        line = req.split(b"\r\n", 1)[0]
        if b"/api/tags" in line or b"/api/version" in line:
            body = b'{"models":[]}' if b"/api/tags" in line else b'{"version":"0.13.0"}'
            writer.write(response_head(200, b"application/json", length=len(body)) + body)
            await writer.drain()
            return
        writer.write(response_head(200, b"application/x-ndjson"))
        for i in range(lines):
            line = (
                b'{"model":"m","created_at":"2025-01-01T00:00:00Z",'
                b'"message":{"role":"assistant","content":"part%d "},"done":false}\n' % i
            )
            writer.write(chunk(line))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.transport.abort()

    return h


def openai_cut_stream(events: int = 2) -> Handler:
    """Answers /v1/chat/completions with a few SSE events, then drops the connection."""

    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        if b"/models" in req.split(b"\r\n", 1)[0]:
            body = b'{"object":"list","data":[]}'
            writer.write(response_head(200, b"application/json", length=len(body)) + body)
            await writer.drain()
            return
        writer.write(response_head(200, b"text/event-stream"))
        for i in range(events):
            ev = (
                b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
                b'"choices":[{"index":0,"delta":{"content":"part%d "},"finish_reason":null}]}'
                b"\n\n" % i
            )
            writer.write(chunk(ev))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.transport.abort()

    return h


def status(code: int, body: bytes, extra: bytes = b"") -> Handler:
    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        writer.write(response_head(code, b"application/json", extra, len(body)) + body)
        await writer.drain()

    return h


class OpenAIStub:
    """A canned OpenAI-compatible server for router tests: it answers instantly with a
    fixed reply (the router is under test, not a model), and can be switched at any
    time to answer a status (429 with Retry-After, 503) or to hold its first byte.

    It lists `models`; every chat request is counted per model in `chats`.
    """

    def __init__(self, *models: str) -> None:
        self.models = list(models)
        self.status = 200
        self.retry_after: str | None = None
        self.first_byte_delay = 0.0
        self.chats: dict[str, int] = {}
        self.failed = 0  # chat requests answered with an error status
        self.running = 0  # chat requests being answered now
        self.peak = 0  # the most answered at once

    def total(self) -> int:
        return sum(self.chats.values())

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
    ) -> None:
        line = req.split(b"\r\n", 1)[0]
        if b" /v1/models " in line:
            data = [
                {"id": m, "object": "model", "created": 1, "owned_by": "stub"} for m in self.models
            ]
            body = json.dumps({"object": "list", "data": data}).encode()
            writer.write(response_head(200, b"application/json", length=len(body)) + body)
            await writer.drain()
            return
        payload = json.loads(req.split(b"\r\n\r\n", 1)[1] or b"{}")
        model = str(payload.get("model", ""))
        self.chats[model] = self.chats.get(model, 0) + 1
        if self.status != 200:
            self.failed += 1
            body = json.dumps(
                {"error": {"message": f"stub says {self.status}", "type": "server_error"}}
            ).encode()
            extra = b"retry-after: %s\r\n" % self.retry_after.encode() if self.retry_after else b""
            writer.write(response_head(self.status, b"application/json", extra, len(body)) + body)
            await writer.drain()
            return
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.first_byte_delay:
                await asyncio.sleep(self.first_byte_delay)
        finally:
            self.running -= 1
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if not payload.get("stream"):
            body = json.dumps(
                {
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "stub answer"}}],
                    "usage": usage,
                }
            ).encode()  # fmt: skip
            writer.write(response_head(200, b"application/json", length=len(body)) + body)
            await writer.drain()
            return
        writer.write(response_head(200, b"text/event-stream"))
        for delta, finish in (({"role": "assistant", "content": "stub"}, None), ({}, "stop")):
            ev = {
                "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }  # fmt: skip
            writer.write(chunk(b"data: " + json.dumps(ev).encode() + b"\n\n"))
        writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()


def openai_canned(
    models: tuple[str, ...] = ("canned",),
    prompt_tokens: int = 7,
    completion_tokens: int = 3,
    cost: float | None = None,
) -> Handler:
    """An OpenAI-compatible backend that answers at once with the same short reply.

    For loads of many requests where the model's words do not matter; usage is counted
    like a real server's (and carries OpenRouter's `cost` when given).
    """
    import json

    usage: dict[str, object] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cost is not None:
        usage["cost"] = cost

    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        line = req.split(b"\r\n", 1)[0]
        body = req.partition(b"\r\n\r\n")[2]
        if b"/models" in line:
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "t"} for m in models]
            out = json.dumps({"object": "list", "data": data}).encode()
        elif b"/embeddings" in line:
            out = json.dumps(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "model": models[0],
                    "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
                }
            ).encode()
        else:
            model = json.loads(body or b"{}").get("model", models[0])
            if b'"stream": true' in body or b'"stream":true' in body:
                writer.write(response_head(200, b"text/event-stream"))
                for ev in (
                    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {"choices": [], "usage": usage},
                ):
                    ev = {"id": "c", "object": "chat.completion.chunk", "created": 1,
                          "model": model, **ev}  # fmt: skip
                    writer.write(chunk(b"data: " + json.dumps(ev).encode() + b"\n\n"))
                writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
                return
            out = json.dumps(
                {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ok"},
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
        writer.write(response_head(200, b"application/json", length=len(out)) + out)
        await writer.drain()

    return h
