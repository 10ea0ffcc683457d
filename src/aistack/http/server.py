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
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import Sequence
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
        "_body_waiter", "_conn", "_continue", "_parts", "_size", "_task", "body_done",
        "broken", "fired", "http10", "keep_alive", "over", "watched",
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
        self._size = 0
        self.over = False  # the body passed the server's limit: the rest is dropped
        self.broken = ""  # why the body could not be parsed (bad chunked framing)
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
        self._size += len(data)
        if self._size > limit:
            self.over = True
            self._parts.clear()
        else:
            self._parts.append(data)

    def end_body(self) -> None:
        self.body_done = True
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail_body(self, why: str) -> None:
        """The body could not be parsed: read_body answers 400, then the connection closes."""
        self.broken = why
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
        if not self.body_done:
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
        if self.broken:
            raise GatewayError(ErrorKind.INVALID_REQUEST, self.broken)
        if self.over or self._size > limit:
            self.keep_alive = False
            raise too_large(limit)
        parts = self._parts
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
        close = not self.keep_alive or conn.stopping
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
        self.closed = False
        self.stopping = False
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._close_when_read = False
        self.discard = False  # refused: what still arrives is dropped (see _linger)
        self.idle_since = self.loop.time()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._head_size = 0
        self._in_head = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        self.server.connections.add(self)

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
        if self._in_head:  # a head that spans packets: count them before httptools keeps them
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._refuse(431, "request headers too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A protocol switch (WebSocket, h2c) is not offered: the request is answered
            # over HTTP/1.1 and the connection closes after it.
            if self.reading is not None:
                self.reading.keep_alive = False
                self.reading.end_body()
        except httptools.HttpParserError as e:
            if self._head_size > MAX_HEAD:  # raised by on_url/on_header
                self._refuse(431, "request headers too large")
            else:
                self._refuse(400, f"malformed HTTP request: {e}")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self.parser
        url = self._url
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
        if self.current is None:
            self._start(req)
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_PIPELINE and not self._reading_paused:
                self._reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.reading is not None:
            self.reading.feed(body, self.limit)

    def on_message_complete(self) -> None:
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
                    self.write(_INTERNAL)
                req.complete = True
                self.answered(req, True)

    def answered(self, req: ServerRequest, close: bool) -> None:
        """`req`'s answer went out whole: close, or go on to the next request."""
        if self.current is not req:
            return
        self.current = None
        self.idle_since = self.loop.time()
        if close or self.stopping:
            if self.reading is req and not self.closed:
                # Answered (a 413) before its body arrived: closing now could reset the
                # connection before the client reads the answer. Drop the rest, then close.
                self._close_when_read = True
                return
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            if self._reading_paused and len(self.queue) < MAX_PIPELINE // 2:
                self._reading_paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            self._start(nxt)

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

    def _refuse(self, status: int, why: str) -> None:
        """A request we cannot parse: say so (if nothing was sent yet) and close."""
        if self.current is None:
            body = why.encode()
            head = [(b"content-type", b"text/plain; charset=utf-8")]
            head.append((b"content-length", str(len(body)).encode()))
            self.write(b"".join(_head(status, head, True)) + body)
            self._linger()
        else:
            # Answer the request in flight, then close; nothing more is read. If it was
            # its own body that could not be parsed, that answer is a 400.
            self.current.keep_alive = False
            self.queue.clear()
            if self.reading is self.current:
                self.current.fail_body(why)
            self.reading = None
            assert self.transport is not None
            self.transport.pause_reading()

    def _linger(self) -> None:
        """Close after an answer the client may still be sending into: closing with its
        bytes unread would reset the connection, and the reset can overtake the answer.
        So: end our side, drop what still comes for up to LINGER seconds, then close."""
        assert self.transport is not None
        self.discard = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.close)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

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


_INTERNAL_BODY = b'{"error": "internal error"}'
_INTERNAL_HEAD = [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(_INTERNAL_BODY))]
_INTERNAL = b"".join([*_head(500, _INTERNAL_HEAD, True), _INTERNAL_BODY])


class Server:
    """Listens, runs the app's start-up and shut-down, closes idle keep-alive connections."""

    def __init__(
        self,
        app: App,
        host: str,
        port: int,
        keepalive: float = 5.0,
        graceful: float = 10.0,
        extra: Sequence[tuple[App, str, int]] = (),
        worker: int | None = None,
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
        self._reaper = self.loop.call_later(1.0, self._reap)
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
        """Close keep-alive connections idle for longer than `keepalive` (one timer for all)."""
        now = self.loop.time()
        for c in list(self.connections):
            if c.current is None and c.reading is None and now - c.idle_since > self.keepalive:
                c.close()
        self._reaper = self.loop.call_later(1.0, self._reap)
