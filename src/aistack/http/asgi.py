"""Thin ASGI plumbing: the request, the body with its size limit, responses, streams.

Pure ASGI on purpose: a framework's request object, body model and middleware cost
15-67% of throughput here (docs/performance.md), and the routes need none of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from aistack.core.errors import ErrorKind, GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json; charset=utf-8"
NDJSON_TYPE = b"application/x-ndjson"
SSE_TYPE = b"text/event-stream"
TEXT_TYPE = b"text/plain; charset=utf-8"


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Request:
    __slots__ = (
        "_headers", "body", "complete", "extra_headers", "finished", "method", "path",
        "receive", "responded", "scope", "send", "status",
    )  # fmt: skip

    def __init__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.path = path
        self.body = b""
        self._headers: dict[bytes, bytes] | None = None
        # Headers every response to this request carries (request id, CORS).
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.responded = False  # the status line went out
        self.status = 0
        self.complete = False  # the last body byte went out
        self.finished = False  # the handler returned

    def header(self, name: bytes) -> bytes | None:
        if self._headers is None:
            self._headers = {k.lower(): v for k, v in self.scope["headers"]}
        return self._headers.get(name)

    async def read_body(self, limit: int) -> bytes:
        """The whole body; a 413 as soon as it is known to be over `limit`."""
        cl = self.header(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            raise too_large(limit)
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
            more = msg.get("more_body", False)
        self.body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self.body

    def json(self) -> object:
        """The body parsed as JSON whatever the Content-Type (curl -d sends a form type)."""
        if not self.body.strip():
            raise GatewayError(ErrorKind.INVALID_REQUEST, "missing request body")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as e:
            msg = f"invalid JSON in request body: {e}"
            raise GatewayError(ErrorKind.INVALID_REQUEST, msg) from None


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"request body too large: the limit is {limit} bytes (server.max_body_bytes)",
    )


async def respond(
    req: Request,
    status: int,
    body: bytes,
    content_type: bytes = JSON_TYPE,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    h = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if req.extra_headers:
        h += req.extra_headers
    if headers:
        h += headers
    req.responded = True
    req.status = status
    await req.send({"type": "http.response.start", "status": status, "headers": h})
    req.complete = True
    await req.send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})


async def respond_json(
    req: Request, obj: object, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await respond(req, status, orjson.dumps(obj), JSON_TYPE, headers)


async def start_stream(
    req: Request, content_type: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    h = [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        # nginx and friends must not buffer a token stream.
        (b"x-accel-buffering", b"no"),
    ]
    if req.extra_headers:
        h += req.extra_headers
    if headers:
        h += headers
    req.responded = True
    req.status = 200
    await req.send({"type": "http.response.start", "status": 200, "headers": h})


async def send_chunk(req: Request, data: bytes) -> None:
    await req.send({"type": "http.response.body", "body": data, "more_body": True})


async def end_stream(req: Request) -> None:
    req.complete = True
    await req.send({"type": "http.response.body", "body": b"", "more_body": False})
