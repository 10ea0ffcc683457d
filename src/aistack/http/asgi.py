"""The request the routes see, and the two ways it reaches them.

`Request` is what every route handler gets: the method, the path, the headers, the body
with its size limit, and four ways to answer (whole, or head + chunks + end). Two kinds
carry it:

- `aistack.http.server` (what `aistack serve` runs): our own HTTP/1.1 protocol on uvloop
  and httptools, which writes an answer's head and body in one system call and watches
  for disconnects without a task per request;
- `AsgiRequest` here: the same routes as an ASGI application (`App` is one), for ASGI
  test clients and anyone who mounts aistack in an ASGI server.

Raw on purpose: a framework's request object, body model and middleware cost 15-67% of
throughput here (docs/performance.md), and the routes need none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson

from aistack.core.errors import ErrorKind, GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = b"application/json; charset=utf-8"
NDJSON_TYPE = b"application/x-ndjson"
SSE_TYPE = b"text/event-stream"
TEXT_TYPE = b"text/plain; charset=utf-8"
NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Watch(Protocol):
    """Cancels a running request's task when its client goes away (see `Request.watch`)."""

    fired: bool  # it did: the task's CancelledError is the client's, not a shutdown's

    def arm(self) -> None: ...

    def disarm(self) -> None: ...


class Request:
    """One request, as the routes see it; subclasses carry it over a connection."""

    __slots__ = (
        "_headers", "body", "client", "complete", "cut", "extra_headers", "finished",
        "method", "params", "path", "query", "responded", "scheme", "status",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes] | None,
        client: tuple[str, int] | None,
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query  # the raw query string, without '?'
        self.params: Mapping[str, str] = NO_PARAMS  # the route's path parameters
        self._headers = headers  # lower-case names; None: built on first use
        self.client = client  # the TCP peer (host, port)
        self.scheme = scheme
        self.body = b""
        # Headers every response to this request carries (request id, CORS).
        self.extra_headers: Headers = []
        self.responded = False  # the status line went out
        self.status = 0
        self.complete = False  # the last body byte went out
        self.finished = False  # the handler returned
        # The server is stopping and this request ran past the grace: its task's
        # CancelledError is the server's, answered with a SERVER_CUT error (see cut_error).
        self.cut = False

    def header(self, name: bytes) -> bytes | None:
        h = self._headers
        if h is None:
            h = self._headers = self._load_headers()
        return h.get(name)

    def _load_headers(self) -> dict[bytes, bytes]:
        return {}

    async def read_body(self, limit: int) -> bytes:
        """The whole body; a 413 as soon as it is known to be over `limit`."""
        raise NotImplementedError

    def json(self) -> object:
        """The body parsed as JSON whatever the Content-Type (curl -d sends a form type).

        Once: the raw bytes are let go here, so that while the request runs a large body
        (base64 images) is held once, as the parsed value, not twice (docs/configuration.md,
        `max_body_bytes`)."""
        body = self.body
        if not body.strip():
            raise GatewayError(ErrorKind.INVALID_REQUEST, "missing request body")
        self.body = b""
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            msg = f"invalid JSON in request body: {e}"
            raise GatewayError(ErrorKind.INVALID_REQUEST, msg) from None

    def watch(self, task: asyncio.Task[None]) -> Watch:
        """A watch that cancels `task` once armed if the client disconnects."""
        raise NotImplementedError

    # The wire: called by respond() and the stream helpers below, which keep the flags.
    async def send_whole(self, status: int, headers: Headers, body: bytes) -> None:
        raise NotImplementedError

    async def send_head(self, status: int, headers: Headers) -> None:
        raise NotImplementedError

    async def send_data(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_end(self) -> None:
        raise NotImplementedError


class AsgiRequest(Request):
    """A request that came through an ASGI server (or an ASGI test client)."""

    __slots__ = ("receive", "scope", "send", "watches")

    def __init__(self, scope: Scope, receive: Receive, send: Send, watches: Watches) -> None:
        client = scope.get("client")
        super().__init__(
            scope["method"],
            scope["path"],
            scope.get("query_string") or b"",
            None,
            (client[0], client[1]) if client else None,
            scope.get("scheme") or "http",
        )
        self.scope = scope
        self.receive = receive
        self.send = send
        self.watches = watches

    def _load_headers(self) -> dict[bytes, bytes]:
        return {k.lower(): v for k, v in self.scope["headers"]}

    async def read_body(self, limit: int) -> bytes:
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

    def watch(self, task: asyncio.Task[None]) -> Watch:
        return _AsgiWatch(self, task, self.watches)

    async def send_whole(self, status: int, headers: Headers, body: bytes) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        body = b"" if self.method == "HEAD" else body
        await self.send({"type": "http.response.body", "body": body})

    async def send_head(self, status: int, headers: Headers) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def send_data(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def send_end(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


def query_of(req: Request) -> dict[str, str]:
    """The query string's parameters, the last value of each."""
    return {k: v[-1] for k, v in parse_qs(req.query.decode("latin-1")).items()}


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"request body too large: the limit is {limit} bytes (server.max_body_bytes)",
    )


CUT = GatewayError(
    ErrorKind.SERVER_CUT,
    "the server is shutting down: this request ran past its shutdown grace and was ended",
)


def was_cut(req: Request) -> bool:
    """`req`'s task was cancelled by the server's shutdown (not by its client): take the
    cancellation back so the request can still end honestly, with `CUT` in its dialect."""
    if not req.cut:
        return False
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
    return True


async def respond(
    req: Request,
    status: int,
    body: bytes,
    content_type: bytes = JSON_TYPE,
    headers: Headers | None = None,
) -> None:
    h = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if req.extra_headers:
        h += req.extra_headers
    if headers:
        h += headers
    req.responded = True
    req.status = status
    req.complete = True
    await req.send_whole(status, h, body)


async def respond_json(
    req: Request, obj: object, status: int = 200, headers: Headers | None = None
) -> None:
    await respond(req, status, orjson.dumps(obj), JSON_TYPE, headers)


async def start_stream(req: Request, content_type: bytes, headers: Headers | None = None) -> None:
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
    await req.send_head(200, h)


async def send_chunk(req: Request, data: bytes) -> None:
    await req.send_data(data)


async def end_stream(req: Request) -> None:
    req.complete = True
    await req.send_end()


# -- the ASGI disconnect watch


class Watches:
    """Cancels ASGI requests whose client disconnects before their answer is complete.

    Watching an ASGI request costs a task (it must wait on `receive()`), so it starts only
    once the request has run for `DELAY` seconds: quick answers never pay for it, and a
    long generation is cancelled at most about that much after its caller leaves. One
    timer for all requests (not one each) finds those that have run that long: requests
    start in order, so it stops at the first one that has not. (Our own server needs none
    of this: it sees the connection close.)
    """

    DELAY = 0.05

    def __init__(self) -> None:
        self._waiting: dict[_AsgiWatch, float] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, w: _AsgiWatch) -> None:
        loop = asyncio.get_running_loop()
        self._waiting[w] = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(self.DELAY, self._tick)

    def discard(self, w: _AsgiWatch) -> None:
        self._waiting.pop(w, None)

    def _tick(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        due = loop.time() - self.DELAY
        started = []
        for w, t in self._waiting.items():
            if t > due:
                break
            started.append(w)
        for w in started:
            del self._waiting[w]
            w.start()
        if self._waiting:
            self._handle = loop.call_later(self.DELAY / 2, self._tick)


class _AsgiWatch:
    """One ASGI request's disconnect watch (see `Watches`)."""

    __slots__ = ("_req", "_task", "_watcher", "_watches", "fired")

    def __init__(self, req: AsgiRequest, task: asyncio.Task[None], watches: Watches) -> None:
        self._req = req
        self._task = task
        self._watches = watches
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False

    def arm(self) -> None:
        self._watches.add(self)

    def start(self) -> None:
        if not self._req.finished:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            msg = await self._req.receive()
            if msg["type"] == "http.disconnect":
                # ASGI servers also say "disconnect" once the response is complete.
                if not self._req.complete and not self._req.finished:
                    self.fired = True
                    self._task.cancel()
                return

    def disarm(self) -> None:
        self._watches.discard(self)
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
