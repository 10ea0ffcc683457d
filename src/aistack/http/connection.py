"""One client connection of the HTTP server (http/server.py): parsing with httptools,
pipelining, back-pressure, deadlines, and the answers the server makes itself."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol, cast

import httptools

from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.app import App
from aistack.http.asgi import JSON_TYPE
from aistack.http.server_limits import LINGER, MAX_HEAD, MAX_PIPELINE, MAX_PIPELINE_BYTES
from aistack.http.server_request import ServerRequest
from aistack.http.wire import RAW_KINDS, RAW_RETRY, RAW_WHY, HeadTooLarge, head_lines, split_target

log = logging.getLogger("aistack.http")


class Host(Protocol):
    """What a connection uses of its server (http/server.py: `Server`)."""

    app: App
    loop: asyncio.AbstractEventLoop
    connections: set[Connection]
    now: float
    head_timeout: float
    body_timeout: float
    max_connections: int
    overflow: int
    refused: int


class Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in order."""

    def __init__(self, server: Host, app: App | None = None) -> None:
        self.server = server
        self.app = app or server.app
        self.limit = self.app.max_body
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.current: ServerRequest | None = None  # being answered
        self.task: asyncio.Task[None] | None = None  # answering it
        self.reading: ServerRequest | None = None  # whose body is being parsed
        self.queue: deque[ServerRequest] = deque()  # pipelined, waiting their turn
        self.queued = 0  # body bytes the queued requests hold (MAX_PIPELINE_BYTES)
        self.closed = False
        self.stopping = False
        self.paused = False  # the client reads slower than we write (see write_timeout)
        self.paused_at = 0.0
        self._drain: asyncio.Future[None] | None = None
        self.reading_paused = False
        self._close_when_read = False
        self.discard = False  # refused: what still arrives is dropped (see _linger)
        self.over_cap = False  # opened past max_connections: its request gets a 503
        self.idle_since = self.loop.time()
        # When what is arriving (a head, a body) must have arrived, on the server's
        # clock; 0: nothing is due. A new connection owes its first head.
        self.deadline = server.now + server.head_timeout
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._head_size = 0  # bytes of the head's fields, as httptools hands them over
        self._raw = 0  # bytes of the later packets of a head that is still incomplete
        self._in_head = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        srv = self.server
        srv.connections.add(self)
        if len(srv.connections) > srv.max_connections:
            self.over_cap = True
            srv.refused += 1
            if len(srv.connections) > srv.max_connections + srv.overflow:
                self._refuse(503, "")  # no room to wait for its head: answered at once
            else:
                self.deadline = srv.now + LINGER  # its head, to answer in its dialect

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.current is not None:
            self.current.gone()
        if self.reading is not None and self.reading is not self.current:
            self.reading.gone()
        self.queue.clear()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.discard:
            return
        if self._in_head:  # a later packet of a head: bounded even if no field ends in it
            self._raw += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A protocol switch (WebSocket, h2c) is not offered: the request is answered
            # over HTTP/1.1 and the connection closes after it; what follows is not HTTP.
            req = self.reading
            if req is not None:
                req.end_body()
                self.reading = None
            else:  # parsed whole already: the last request queued, else the current one
                req = self.queue[-1] if self.queue else self.current
            if req is not None:
                req.keep_alive = False
            self.deadline = 0.0
            self.discard = True
            return
        except httptools.HttpParserError as e:
            if self._head_size > MAX_HEAD:  # raised by on_url/on_header
                self._refuse(431, "request headers too large")
            else:
                self._refuse(400, f"malformed HTTP request: {e}")
            return
        if self._in_head and self._raw > MAX_HEAD:
            # Counted only while the head is still incomplete after the packet, so all of
            # these bytes are the head's: httptools keeps a field whole until it ends.
            self._refuse(431, "request headers too large")

    def pause_writing(self) -> None:
        self.paused = True
        self.paused_at = self.server.now

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()
        if self.current is None and self.queue and not self.closed:
            self._next()  # pipelined requests wait while their answers cannot be sent

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._raw = 0
        self._in_head = True
        if not self.deadline:
            srv = self.server
            self.deadline = srv.now + srv.head_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise HeadTooLarge
        name = name.lower()
        h = self._headers
        if name in h:
            # A repeated field is one value, its lines joined with ", " (RFC 9110 5.3);
            # cookies with "; " (RFC 6265 5.4). Set-Cookie, the exception, is never sent
            # to a server.
            h[name] += (b"; " if name == b"cookie" else b", ") + value
        else:
            h[name] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.discard:
            return
        if self.over_cap:
            self._refuse(503, "")
            return
        p = self.parser
        path, query = split_target(self._url)
        req = ServerRequest(
            self,
            p.get_method().decode("ascii"),
            path,
            query,
            self._headers,
            p.should_keep_alive(),
            p.get_http_version() == "1.0",
        )
        self.reading = req
        srv = self.server
        self.deadline = srv.now + srv.body_timeout  # cleared at once when there is none
        if self.current is None:
            self._start(req)
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_PIPELINE:
                self._pause()

    def on_body(self, body: bytes) -> None:
        r = self.reading
        if r is not None:
            r.feed(body, self.limit)
            if r is not self.current and not r.over:  # queued behind the one answered
                self.queued += len(body)
                if self.queued > MAX_PIPELINE_BYTES:
                    self._pause()

    def on_message_complete(self) -> None:
        self.deadline = 0.0
        req = self.reading
        if req is not None:
            self.reading = None
            req.end_body()
        if self._close_when_read:
            self.close()

    # -- running requests

    def _start(self, req: ServerRequest) -> None:
        self.current = req
        # The loop holds tasks weakly: the connection keeps the one it runs.
        self.task = self.loop.create_task(self._run(req))

    async def _run(self, req: ServerRequest) -> None:
        try:
            await self.app.handle(req)
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            if self.current is req and not req.complete:
                # Ended without a whole answer: a body cut mid-stream, or no answer at all.
                if not req.responded and not self.closed:
                    self.write(self._answer(req.path, 500, "internal error"))
                req.complete = True
                self.answered(req, True)

    def answered(self, req: ServerRequest, close: bool) -> None:
        """`req`'s answer went out whole: close, or go on to the next request."""
        if self.current is not req:
            return
        self.current = None
        self.idle_since = self.loop.time()
        if self.reading is req:
            # Answered before its body was read (a 401, a 404, a 413): what still comes
            # of it is parsed and dropped, never kept.
            req.drop()
        if close or self.stopping:
            if self.reading is req and not self.closed:
                if req._continue:  # it was never asked for its body: no need to wait for it
                    self._linger()
                    return
                # Closing now could reset the connection before the client reads the
                # answer: drop the rest, then close (at the latest at its body's deadline).
                self._close_when_read = True
                return
            self.close()
            return
        if self.queue and not self.paused:  # else when the client has read some more
            self._next()

    def _next(self) -> None:
        """Start the next pipelined request."""
        nxt = self.queue.popleft()
        self.queued = sum(r.size for r in self.queue)
        if (
            self.reading_paused
            and len(self.queue) < MAX_PIPELINE // 2
            and self.queued <= MAX_PIPELINE_BYTES // 2
        ):
            self._resume()
        self._start(nxt)

    def _pause(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True  # the deadlines wait while we do
            assert self.transport is not None
            self.transport.pause_reading()

    def _resume(self) -> None:
        self.reading_paused = False
        assert self.transport is not None
        self.transport.resume_reading()
        srv = self.server
        if self.reading is not None:
            self.deadline = srv.now + srv.body_timeout
        elif self._in_head:
            self.deadline = srv.now + srv.head_timeout

    # -- deadlines (checked by Server._reap)

    def expire(self) -> None:
        """What was due did not arrive in time."""
        self.deadline = 0.0
        if self.closed:
            return
        if self.discard or self._close_when_read:  # answered already: stop waiting
            self.close()
            return
        srv = self.server
        if self.over_cap:
            self._refuse(503, "")
            return
        req = self.reading
        if req is None:
            if self._in_head:
                why = f"the request head did not arrive within {srv.head_timeout:g} s"
                self._refuse(408, why + " (server.head_timeout)")
            elif self.current is None:
                self.close()  # connected and sent nothing
            return
        why = f"the request body did not arrive within {srv.body_timeout:g} s"
        why += " (server.body_timeout)"
        if req is self.current and not req.responded:
            # Its route waits for it, or will: the 408 is the route's, in its dialect.
            req.fail_body(GatewayError(ErrorKind.REQUEST_TIMEOUT, why))
        log.info("%s %s: %s; closing", req.method, req.path, why)
        self._stop_reading()

    def _stop_reading(self) -> None:
        """Read nothing more: the answer in flight goes out whole, then the connection
        closes (what the client still sends meanwhile is dropped)."""
        self.queue.clear()
        self.queued = 0
        self.reading = None
        self.deadline = 0.0
        self.discard = True
        cur = self.current
        if cur is None:
            self.close()
        else:
            cur.keep_alive = False

    # -- writing

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self.transport.write(data)

    async def drained(self) -> None:
        while self.paused and not self.closed:
            if self._drain is None:
                self._drain = self.loop.create_future()
            await self._drain

    def _wake_writer(self) -> None:
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    def _answer(self, path: str, status: int, why: str) -> bytes:
        """An answer the server makes itself, whole, in the dialect of `path`'s route."""
        why = why or RAW_WHY.get(status, "")
        e = GatewayError(RAW_KINDS[status], why, retry_after=RAW_RETRY.get(status))
        body = self.app.raw_error(path, e)
        head = [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(body))]
        if e.retry_after is not None:
            head.append((b"retry-after", b"%d" % e.retry_after))
        return b"".join([*head_lines(status, head, True), body])

    def _refuse(self, status: int, why: str) -> None:
        """A request we will not read further: say so (if nothing was sent yet) and close."""
        if self.discard or self.closed:
            return
        if self.current is None:
            if self.reading is None:  # else that request was answered already
                self.write(self._answer(split_target(self._url)[0], status, why))
            self._linger()
        else:
            # Answer the request in flight, then close; nothing more is read. If it was
            # its own body that could not be parsed, that answer is this error.
            if self.reading is self.current:
                self.current.fail_body(GatewayError(RAW_KINDS[status], why))
            self._stop_reading()

    def _linger(self) -> None:
        """Close after an answer the client may still be sending into: closing with its
        bytes unread would reset the connection, and the reset can overtake the answer.
        So: end our side, drop what still comes for up to LINGER seconds, then close."""
        assert self.transport is not None
        self.discard = True
        self.reading = None
        self.deadline = 0.0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.close)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close without flushing what the client did not read (a stalled reader)."""
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def stop(self) -> None:
        """The server is stopping: close now if idle, else after the answer in flight."""
        self.stopping = True
        if self.current is None:
            self.close()

    def cut(self) -> bool:
        """The shutdown grace ran out: end the request in flight. Its task is cancelled
        with `req.cut` set, so its route ends it honestly (a stream with its dialect's
        error event, anything else with a 503) and it is recorded as cut by the server;
        the connection closes after that answer. Whether there was one to cut."""
        req, task = self.current, self.task
        if req is None or task is None or task.done() or req.complete or self.closed:
            return False
        req.cut = True
        self.queue.clear()
        task.cancel()
        return True
