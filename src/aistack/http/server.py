"""aistack's HTTP/1.1 server: an asyncio protocol on uvloop, parsing with httptools, calling
the routes directly.

Why not an ASGI server: uvicorn spent about a third of the gateway's CPU per request
here, in the ASGI cycle (a scope dict, message dicts, an event per request) and in two
system calls per answer (head, then body). This one writes a whole answer in one call,
builds the request's header table while parsing, and sees a disconnect as the
connection closing (no task per request to watch for it). Numbers in docs/performance.md.

What it does, HTTP/1.1 as the apps speak it: keep-alive (closed after `keepalive` idle
seconds), pipelining (answered in order), chunked request bodies, `Expect: 100-continue`,
a limit on the header block (431), bodies over the limit refused early (413, then the
connection closes), answers whole (Content-Length) or streamed (chunked), back-pressure
from slow readers, and a graceful stop: on SIGTERM or SIGINT it stops accepting, lets
requests in flight finish (up to `graceful` seconds: server.shutdown_grace), ends those
still running as cut by the server (a stream with its dialect's error event, the rest
with a 503, each recorded so), then stops the gateway, which flushes the usage ledger
before it closes the backends.

And what it does against slow and hostile clients (`Limits`, docs/configuration.md):
a head must arrive whole within `head_timeout` of its first byte (or of the connection)
and a body within `body_timeout` of its head, else a 408 and a close; the body of a
request answered before it was read (a 401, 404, 413) is parsed and dropped, never
kept; past `max_connections` a new connection gets a 503 with Retry-After; a client that
stops reading an answer is cut after `write_timeout`; pipelined requests are queued up
to a count and a number of body bytes, then reading pauses. One timer a second checks
every deadline (`Server._reap`): the request path only stores a number.

Every answer the server makes itself (400, 408, 413, 431, 503) is JSON in the dialect
of the route its path names (the route table's `dialect_at`), like the routes' own.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools

from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.app import App
from aistack.http.asgi import JSON_TYPE, ClientGone, Headers, Request, Watch, too_large

log = logging.getLogger("aistack.http")

MAX_HEAD = 64 * 1024  # bytes of request line and headers
LINGER = 2.0  # seconds a refused connection drops the rest of what the client sends
MAX_PIPELINE = 16  # requests queued behind the one being answered before reading pauses
CUT_WAIT = 2.0  # seconds requests cut at the end of the shutdown grace get to end
MAX_PIPELINE_BYTES = 1024 * 1024  # body bytes queued behind it before reading pauses
TICK = 1.0  # seconds between two checks of every connection's deadlines


@dataclass(frozen=True, slots=True)
class Limits:
    """What a connection may take (config: `server.*`, docs/configuration.md)."""

    head_timeout: float = 10.0  # seconds from a head's first byte (or the connect) to its end
    body_timeout: float = 120.0  # seconds from the end of a head to the end of its body
    write_timeout: float = 60.0  # seconds a client may leave an answer unread
    max_connections: int = 0  # open connections, all listeners; 0: from the open-file limit


def default_max_connections() -> int:
    """Three quarters of the open-file limit (at most 10,000): the rest stays for
    backends, the store, logs and the 503s themselves."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 10_000
    return max(16, min(10_000, soft * 3 // 4))


_STATUS: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    return line if line is not None else f"HTTP/1.1 {status} \r\n".encode()


# With several workers, every answer says which one it came from (`x-aistack-worker`).
_WORKER: list[bytes] = []


def _head(status: int, headers: Headers, close: bool) -> list[bytes]:
    parts = [_status_line(status), *_WORKER]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts


class ServerRequest(Request):
    """A request read by `Connection`: its body arrives while the handler runs."""

    __slots__ = (
        "_body_waiter", "_conn", "_continue", "_parts", "_task", "body_done", "broken",
        "fired", "http10", "keep_alive", "over", "size", "watched",
    )  # fmt: skip

    def __init__(
        self,
        conn: Connection,
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
        parts = _head(status, headers, close)
        if self.method != "HEAD" and body:
            parts.append(body)
        conn.write(b"".join(parts))
        conn.answered(self, close)

    async def send_head(self, status: int, headers: Headers) -> None:
        if self.http10:  # no chunked encoding in HTTP/1.0: the stream ends with the connection
            self.keep_alive = False
            self._conn.write(b"".join(_head(status, headers, True)))
            return
        close = not self.keep_alive or self._conn.stopping
        close = close or (self._continue and not self.body_done)
        self.keep_alive = not close
        parts = _head(status, [*headers, (b"transfer-encoding", b"chunked")], close)
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


class Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in order."""

    def __init__(self, server: Server, app: App | None = None) -> None:
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
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge
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
        path, query = _split(self._url)
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
        why = why or _WHY.get(status, "")
        e = GatewayError(_KINDS[status], why, retry_after=_RETRY.get(status))
        body = self.app.raw_error(path, e)
        head = [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(body))]
        if e.retry_after is not None:
            head.append((b"retry-after", b"%d" % e.retry_after))
        return b"".join([*_head(status, head, True), body])

    def _refuse(self, status: int, why: str) -> None:
        """A request we will not read further: say so (if nothing was sent yet) and close."""
        if self.discard or self.closed:
            return
        if self.current is None:
            if self.reading is None:  # else that request was answered already
                self.write(self._answer(_split(self._url)[0], status, why))
            self._linger()
        else:
            # Answer the request in flight, then close; nothing more is read. If it was
            # its own body that could not be parsed, that answer is this error.
            if self.reading is self.current:
                self.current.fail_body(GatewayError(_KINDS[status], why))
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


class _HeadTooLarge(Exception):
    pass


def _split(url: bytes) -> tuple[str, bytes]:
    """A request target's path (percent-decoded) and raw query."""
    if url[:1] != b"/":  # absolute form (a proxy's) or '*'
        try:
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        except httptools.HttpParserInvalidURLError:
            url = b"/"
    raw, _, query = url.partition(b"?")
    path = raw.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    return path, query


_KINDS = {
    400: ErrorKind.INVALID_REQUEST,
    408: ErrorKind.REQUEST_TIMEOUT,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    431: ErrorKind.HEADERS_TOO_LARGE,
    500: ErrorKind.INTERNAL,
    503: ErrorKind.OVERLOADED,
}
_WHY = {503: "the gateway is at its connection limit (server.max_connections); retry shortly"}
_RETRY = {503: 1}


class Server:
    """Listens, runs the app's start-up and shut-down, closes idle keep-alive connections
    and those past a deadline (one timer for all)."""

    def __init__(
        self,
        app: App,
        host: str,
        port: int,
        keepalive: float = 5.0,
        graceful: float = 10.0,
        extra: Sequence[tuple[App, str, int]] = (),
        worker: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        # One of several workers on the same port (SO_REUSEPORT: the kernel spreads the
        # connections over the workers' listeners); its index goes out on every answer.
        self.worker = worker
        if worker is not None:
            _WORKER[:] = [b"x-aistack-worker: %d\r\n" % worker]
        # More listeners, each with an app of its own on the same gateway (the vector
        # store's own port): started and stopped with the main one.
        self.extra = tuple(extra)
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.graceful = graceful
        limits = limits or Limits()
        self.head_timeout = limits.head_timeout
        self.body_timeout = limits.body_timeout
        self.write_timeout = limits.write_timeout
        self.max_connections = limits.max_connections or default_max_connections()
        # Past the cap, this many more wait for their heads (to answer in their dialect).
        self.overflow = max(16, self.max_connections // 8)
        self.refused = 0  # connections answered 503 since the last tick
        self.now = 0.0  # the loop's clock at the last tick: deadlines are set against it
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop  # set by serve()
        self.started = False
        self._stop: asyncio.Event | None = None
        self._reaper: asyncio.TimerHandle | None = None

    def should_stop(self) -> None:
        """Stop gracefully; asked a second time (a second Ctrl-C), cut what is in flight."""
        if self._stop is None:
            return
        if self._stop.is_set():
            for c in list(self.connections):
                c.close()
        self._stop.set()

    async def serve(self, ready: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `should_stop`); the process's exit status."""
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self._stop = asyncio.Event()
        failed = await self.app.startup()
        if failed is not None:
            return 1
        listeners: list[asyncio.Server] = []
        for app, host, port in ((self.app, self.host, self.port), *self.extra):
            try:
                listeners.append(
                    await self.loop.create_server(
                        lambda app=app: Connection(self, app),  # type: ignore[misc]
                        host,
                        port,
                        backlog=2048,
                        reuse_address=True,
                        reuse_port=self.worker is not None,
                    )
                )
            except OSError as e:
                log.error("cannot listen on %s:%s: %s", host, port, e.strerror or e)
                for other in listeners:
                    other.close()
                await self.app.shutdown()
                return 1
        self.started = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.should_stop)
        self.now = self.loop.time()
        self._reaper = self.loop.call_later(TICK, self._reap)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("listening on http://%s:%d", shown, self.port)
        for _, host, port in self.extra:
            log.info("also listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
            await self._shut(listeners)  # still listening for a second signal meanwhile
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(sig)
        return 0

    async def _shut(self, listeners: list[asyncio.Server]) -> None:
        log.info("stopping: finishing requests in flight (up to %gs)", self.graceful)
        for listener in listeners:
            listener.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for c in list(self.connections):
            c.stop()
        deadline = self.loop.time() + self.graceful
        while self.connections and self.loop.time() < deadline:  # noqa: ASYNC110 (a poll, bounded)
            await asyncio.sleep(0.05)
        cut = [c for c in list(self.connections) if c.cut()]
        if cut:
            # Each ends with its dialect's error and closes; a client that does not read
            # its last bytes is not waited for long.
            log.warning("shutdown grace (%gs) over: cutting %d requests", self.graceful, len(cut))
            deadline = self.loop.time() + CUT_WAIT
            while (  # noqa: ASYNC110 (a poll, bounded)
                any(c.current is not None and not c.closed for c in cut)
                and self.loop.time() < deadline
            ):
                await asyncio.sleep(0.02)
        for c in list(self.connections):  # still there: closed (their tasks are cancelled)
            c.close()
        await asyncio.sleep(0)
        try:
            await self.app.shutdown()
        finally:
            log.info("stopped")

    def _reap(self) -> None:
        """Once a tick: close keep-alive connections idle for longer than `keepalive`,
        readers stalled for longer than `write_timeout`, and act on passed deadlines."""
        now = self.now = self.loop.time()
        keepalive, stall = self.keepalive, self.write_timeout
        for c in list(self.connections):
            if c.paused and now - c.paused_at > stall:
                log.info(
                    "%s: closed: it read none of its answer for %gs (server.write_timeout)",
                    c.client or "a client",
                    stall,
                )
                c.abort()
            elif c.deadline and now > c.deadline and not c.reading_paused:
                c.expire()
            elif (
                c.current is None
                and c.reading is None
                and not c.queue
                and now - c.idle_since > keepalive
            ):
                c.close()
        if self.refused:
            log.warning(
                "%d connections past server.max_connections (%d) answered 503",
                self.refused,
                self.max_connections,
            )
            self.refused = 0
        self._reaper = self.loop.call_later(TICK, self._reap)
