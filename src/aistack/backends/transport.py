"""A small HTTP/1.1 client for the data path: asyncio protocol + httptools, keep-alive pools.

Why not httpx or aiohttp: on these machines httpx collapsed under concurrency (about
0.02x of aiohttp; seconds to first token with 200 open streams) and a hand-rolled
asyncio client ran about 2.4x aiohttp (docs/performance.md). Backends need little:
POST a body, read a status and headers, then the body whole, by lines (NDJSON) or by
events (SSE), with four timeouts and prompt cancellation. That is all this does.

Cancellation closes the connection, so a backend sees its client go away and stops
generating. A pooled connection the server closed while idle is retried once on a
fresh one, because nothing was sent on it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20  # stop reading from the socket when this much body is unconsumed


class TransportError(Exception):
    """The backend could not be reached or did not answer as HTTP should."""


class ConnectError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    """The connection closed or the bytes were not valid HTTP."""


class TransportTimeout(TransportError):
    phase = "request"


class ConnectTimeout(TransportTimeout):
    phase = "connect"


class FirstByteTimeout(TransportTimeout):
    phase = "first byte"


class IdleTimeout(TransportTimeout):
    phase = "idle"


class TotalTimeout(TransportTimeout):
    phase = "total"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None means no limit. `first_byte` runs until the response headers."""

    connect: float | None = 10.0
    first_byte: float | None = None
    idle: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed base URL: where to connect, and the path prefix requests go under."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash
    host_header: bytes
    key: tuple[str, str, int] = ("", "", 0)  # the connection pool's key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}{self.path}"


def parse_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default else f":{port}")
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        path=parts.path.rstrip("/"),
        host_header=host_header.encode(),
    )


class _Deadlines:
    """Timeouts for many waits with one timer, checked every `TICK` seconds.

    A timer per wait (call_at, then cancel, plus the exception made in advance) cost more
    than the rest of waiting for a response: every request arms one for its first byte,
    every streamed chunk one for the idle limit. These limits are seconds long, so
    checking ten times a second is exact enough.
    """

    TICK = 0.1

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waits: dict[asyncio.Future[None], tuple[float, type[TransportTimeout], str]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(
        self, fut: asyncio.Future[None], when: float, kind: type[TransportTimeout], why: str
    ) -> None:
        self._waits[fut] = (when, kind, why)
        if self._handle is None:
            self._handle = self._loop.call_later(self.TICK, self._tick)

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._waits.pop(fut, None)

    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        expired = [f for f, (when, _, _) in self._waits.items() if when <= now]
        for fut in expired:
            _, kind, why = self._waits.pop(fut)
            if not fut.done():
                fut.set_exception(kind(why))
        if self._waits:
            self._handle = self._loop.call_later(self.TICK, self._tick)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; answers one request at a time."""

    __slots__ = (
        "_body_framed", "_client", "_headers", "_keep_alive", "_key", "_paused", "_status",
        "buffered",
        "chunks", "closed", "done", "exc", "head_waiter", "parser", "transport",
        "waiter",
    )  # fmt: skip

    def __init__(self, client: HttpClient, key: tuple[str, str, int]) -> None:
        self._client = client
        self._key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._status = 0
        self._keep_alive = False
        self._body_framed = False
        self._paused = False
        self.buffered = 0
        self.chunks: deque[bytes] = deque()
        self.done = False
        self.exc: BaseException | None = None
        self.head_waiter: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(RemoteProtocolError(f"invalid HTTP response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_waiter is None and self.waiter is None and not self.chunks:
            return
        if self._status and not self._body_framed and not self.done:
            # A body delimited by the connection closing ends here, complete.
            self.on_message_complete()
            return
        if not self.done:
            self._fail(RemoteProtocolError("connection closed before the response was complete"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding"):
            self._body_framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        # Ask now: once the message is complete the parser has reset for the next one.
        self._keep_alive = self.parser.should_keep_alive()
        if self._status in (204, 304) or 100 <= self._status < 200:
            self._body_framed = True
        hw = self.head_waiter
        if hw is not None and not hw.done():
            hw.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        hw = self.head_waiter
        if hw is not None and not hw.done():
            hw.set_result(None)
        self._wake()

    # -- helpers
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.exc = exc
        for w in (self.head_waiter, self.waiter):
            if w is not None and not w.done():
                w.set_exception(exc)
        self.close()

    def take(self) -> bytes | None:
        if not self.chunks:
            return None
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._paused and self.buffered < _PAUSE_AT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def release(self) -> None:
        """The response was read to its end: back to the pool, or closed."""
        if self.closed or self.exc is not None or not self._keep_alive:
            self.close()
            return
        self._reset()
        self._client._put_idle(self._key, self)


class Response:
    """A response whose body is read at most once: whole, by chunks, lines or SSE events."""

    __slots__ = (
        "_conn", "_deadline", "_deadlines", "_idle", "_loop", "_released", "headers", "status",
    )  # fmt: skip

    def __init__(
        self,
        conn: _Conn,
        status: int,
        headers: list[tuple[bytes, bytes]],
        idle: float | None,
        deadline: float | None,
        deadlines: _Deadlines,
    ) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self._idle = idle
        self._deadline = deadline
        self._deadlines = deadlines
        self._loop = asyncio.get_running_loop()
        self._released = False

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    async def _next(self) -> bytes | None:
        conn = self._conn
        while True:
            chunk = conn.take()
            if chunk is not None:
                return chunk
            if conn.exc is not None:
                raise conn.exc
            if conn.done:
                self._release()
                return None
            waiter: asyncio.Future[None] = self._loop.create_future()
            conn.waiter = waiter
            idle_at = self._loop.time() + self._idle if self._idle is not None else None
            d = self._deadline
            if d is not None and (idle_at is None or d < idle_at):
                self._deadlines.add(waiter, d, TotalTimeout, "the backend did not finish in time")
            elif idle_at is not None:
                self._deadlines.add(waiter, idle_at, IdleTimeout, "the backend stopped sending")
            try:
                await waiter
            except BaseException:
                self.close()
                raise
            finally:
                conn.waiter = None
                self._deadlines.discard(waiter)

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._next()) is not None:
                yield chunk
        finally:
            self.close()

    async def iter_lines(self) -> AsyncIterator[bytes]:
        """NDJSON: one non-empty line at a time, without its newline."""
        buf = b""
        try:
            while (chunk := await self._next()) is not None:
                buf += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
            if buf.strip():
                yield buf
        finally:
            self.close()

    async def iter_sse(self) -> AsyncIterator[tuple[str, bytes]]:
        """Server-Sent Events as (event, data); comments and keep-alives are skipped."""
        buf = b""
        try:
            while (chunk := await self._next()) is not None:
                buf += chunk
                if b"\r" in buf:
                    # Keep a trailing \r until we see whether \n follows it.
                    tail = buf.endswith(b"\r")
                    buf = buf.replace(b"\r\n", b"\n")
                    if not tail:
                        buf = buf.replace(b"\r", b"\n")
                while True:
                    end = buf.find(b"\n\n")
                    if end < 0:
                        break
                    block, buf = buf[:end], buf[end + 2 :]
                    ev = _parse_event(block)
                    if ev is not None:
                        yield ev
            if buf.strip():
                ev = _parse_event(buf.replace(b"\r", b""))
                if ev is not None:
                    yield ev
        finally:
            self.close()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.release()

    def close(self) -> None:
        """Give the connection back if the body was read; otherwise close it."""
        if self._released:
            return
        self._released = True
        if self._conn.done and self._conn.exc is None and not self._conn.chunks:
            self._conn.release()
        else:
            self._conn.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _parse_event(block: bytes) -> tuple[str, bytes] | None:
    event = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if not data:
        return None
    return event, b"\n".join(data)


class HttpClient:
    """Keep-alive connection pools, one per (scheme, host, port)."""

    def __init__(self, *, max_idle_per_host: int = 256, ssl_context: ssl.SSLContext | None = None):
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._max_idle = max_idle_per_host
        self._ssl = ssl_context
        self._closed = False
        self._deadlines: _Deadlines | None = None

    def _put_idle(self, key: tuple[str, str, int], conn: _Conn) -> None:
        pool = self._idle.setdefault(key, [])
        if self._closed or len(pool) >= self._max_idle:
            conn.close()
        else:
            pool.append(conn)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, ep: Endpoint, deadline: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(self, ep.key)
        try:
            async with asyncio.timeout_at(deadline):
                await loop.create_connection(
                    lambda: conn,
                    ep.host,
                    ep.port,
                    ssl=self._ssl_context() if ep.scheme == "https" else None,
                    server_hostname=ep.host if ep.scheme == "https" else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {ep.host}:{ep.port} timed out") from None
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise ConnectError(f"cannot connect to {ep.host}:{ep.port}: {reason}") from None
        return conn

    async def request(
        self,
        method: str,
        ep: Endpoint,
        path: str,
        *,
        body: bytes | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        timeouts: Timeouts = Timeouts(),  # frozen, shared default
    ) -> Response:
        """Send a request; returns once the status and headers have arrived."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total_at = start + timeouts.total if timeouts.total is not None else None
        connect_at = start + timeouts.connect if timeouts.connect is not None else None
        if total_at is not None and (connect_at is None or total_at < connect_at):
            connect_at = total_at
        head = self._head(method, ep, path, body, headers)
        for attempt in (0, 1):
            pool = self._idle.get(ep.key)
            conn = None
            while pool:
                c = pool.pop()
                if not c.closed:
                    conn = c
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(ep, connect_at)
            try:
                return await self._exchange(conn, head, body, timeouts, start, total_at)
            except RemoteProtocolError:
                # A kept-alive connection the server closed while idle: nothing was
                # processed, so one retry on a fresh connection is safe.
                if reused and attempt == 0 and conn._status == 0:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _head(
        self,
        method: str,
        ep: Endpoint,
        path: str,
        body: bytes | None,
        headers: list[tuple[bytes, bytes]] | None,
    ) -> bytes:
        lines = [
            method.encode(),
            b" ",
            (ep.path + path).encode(),
            b" HTTP/1.1\r\nhost: ",
            ep.host_header,
            b"\r\naccept-encoding: identity\r\n",
        ]
        if headers:
            for k, v in headers:
                lines += [k, b": ", v, b"\r\n"]
        if body is not None:
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _exchange(
        self,
        conn: _Conn,
        head: bytes,
        body: bytes | None,
        timeouts: Timeouts,
        start: float,
        total_at: float | None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        transport = conn.transport
        assert transport is not None
        waiter: asyncio.Future[None] = loop.create_future()
        conn.head_waiter = waiter
        if body and len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            if body:
                transport.write(body)
        fb_at = loop.time() + timeouts.first_byte if timeouts.first_byte is not None else None
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = _Deadlines(loop)
        if total_at is not None and (fb_at is None or total_at < fb_at):
            deadlines.add(waiter, total_at, TotalTimeout, "the backend did not answer in time")
        elif fb_at is not None:
            why = "the backend did not start answering in time"
            deadlines.add(waiter, fb_at, FirstByteTimeout, why)
        try:
            await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            conn.head_waiter = None
            deadlines.discard(waiter)
        if conn.exc is not None:
            conn.close()
            raise conn.exc
        return Response(conn, conn._status, conn._headers, timeouts.idle, total_at, deadlines)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            for c in pool:
                c.close()
        self._idle.clear()
