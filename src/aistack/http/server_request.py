"""A request as the HTTP server (http/server.py) reads it: the body fed in by its
connection while the route runs, the disconnect watch, and the answer's bytes."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aistack.core.errors import GatewayError
from aistack.http.asgi import ClientGone, Headers, Request, Watch, too_large
from aistack.http.wire import head_lines


class Conn(Protocol):
    """What a request uses of its connection (http/connection.py: `Connection`)."""

    client: tuple[str, int] | None
    closed: bool
    stopping: bool
    paused: bool

    def write(self, data: bytes) -> None: ...

    async def drained(self) -> None: ...

    def answered(self, req: ServerRequest, close: bool) -> None: ...


class ServerRequest(Request):
    """A request read by `Connection`: its body arrives while the handler runs."""

    __slots__ = (
        "_body_waiter", "_conn", "_continue", "_parts", "_task", "body_done", "broken",
        "fired", "http10", "keep_alive", "over", "size", "watched",
    )  # fmt: skip

    def __init__(
        self,
        conn: Conn,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes],
        keep_alive: bool,
        http10: bool = False,
    ) -> None:
        super().__init__(method, path, query, headers, conn.client)
        self._conn = conn
        self.keep_alive = keep_alive
        self.http10 = http10
        self._parts: list[bytes] = []
        self.size = 0
        self.over = False  # past the limit, or answered without it: the rest is dropped
        self.broken: GatewayError | None = None  # why the body cannot be had (framing, time)
        self.body_done = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._continue = headers.get(b"expect", b"").lower() == b"100-continue"
        self._task: asyncio.Task[None] | None = None
        self.watched = False
        self.fired = False

    # -- the body, fed by the connection

    def feed(self, data: bytes, limit: int) -> None:
        if self.over:
            return
        self.size += len(data)
        if self.size > limit:
            # Over the limit (a chunked body, or one longer than it said): answered now,
            # not when it ends, which it may never do (a chunk of 2^64 - 1 bytes).
            self.drop()
            w = self._body_waiter
            if w is not None and not w.done():
                w.set_result(None)
        else:
            self._parts.append(data)

    def drop(self) -> None:
        """Keep none of the body, now or later (answered without it, or over the limit)."""
        self.over = True
        self._parts = []

    def end_body(self) -> None:
        self.body_done = True
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail_body(self, e: GatewayError) -> None:
        """The body cannot be had (bad framing: 400; too slow: 408): read_body raises `e`,
        the route answers it in its dialect, then the connection closes."""
        self.broken = e
        self.keep_alive = False
        self.end_body()

    def gone(self) -> None:
        """The connection closed under this request."""
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_exception(ClientGone())
        elif self.watched and not self.complete and not self.finished:
            self.fired = True
            if self._task is not None:
                self._task.cancel()

    async def read_body(self, limit: int) -> bytes:
        cl = self.header(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            self.keep_alive = False  # the unread body would be read as the next request
            raise too_large(limit)
        if not self.body_done and not self.over:
            conn = self._conn
            if conn.closed:
                raise ClientGone
            if self._continue:
                self._continue = False
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._body_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        if self.broken is not None:
            raise self.broken
        if self.over or self.size > limit:
            self.keep_alive = False
            raise too_large(limit)
        parts = self._parts
        self._parts = []  # one copy of the body from here on, not two
        self.body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self.body

    # -- the disconnect watch: the connection closing is the signal

    def watch(self, task: asyncio.Task[None]) -> Watch:
        self._task = task
        return self

    def arm(self) -> None:
        self.watched = True
        if self._conn.closed and self._task is not None:
            # Gone while its body was read or its key checked: stop before the model runs.
            self.fired = True
            self._task.cancel()

    def disarm(self) -> None:
        self.watched = False
        self._task = None

    # -- the answer

    async def send_whole(self, status: int, headers: Headers, body: bytes) -> None:
        conn = self._conn
        # An answer before a body it was asked to wait for (Expect: 100-continue, a 401):
        # the client may send it or not, so the connection cannot go on.
        close = not self.keep_alive or conn.stopping or (self._continue and not self.body_done)
        parts = head_lines(status, headers, close)
        if self.method != "HEAD" and body:
            parts.append(body)
        conn.write(b"".join(parts))
        conn.answered(self, close)

    async def send_head(self, status: int, headers: Headers) -> None:
        if self.http10:  # no chunked encoding in HTTP/1.0: the stream ends with the connection
            self.keep_alive = False
            self._conn.write(b"".join(head_lines(status, headers, True)))
            return
        close = not self.keep_alive or self._conn.stopping
        close = close or (self._continue and not self.body_done)
        self.keep_alive = not close
        parts = head_lines(status, [*headers, (b"transfer-encoding", b"chunked")], close)
        self._conn.write(b"".join(parts))

    async def send_data(self, data: bytes) -> None:
        if not data or self.method == "HEAD":
            return
        conn = self._conn
        conn.write(data if self.http10 else b"%x\r\n%b\r\n" % (len(data), data))
        if conn.paused:
            await conn.drained()

    async def send_end(self) -> None:
        conn = self._conn
        if self.method != "HEAD" and not self.http10:
            conn.write(b"0\r\n\r\n")
        conn.answered(self, not self.keep_alive or conn.stopping)
