"""One keep-alive connection to a backend (an asyncio protocol on httptools), the
response read from it (whole, by chunks, lines or SSE events), and the one timer that
checks every wait's deadline. The pools are transport.py's `HttpClient`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

import httptools

from aistack.backends.wire import (
    IdleTimeout,
    RemoteProtocolError,
    TotalTimeout,
    TransportTimeout,
)

_PAUSE_AT = 1 << 20  # stop reading from the socket when this much body is unconsumed

# Where a connection goes when its response was read to its end: back to its pool.
Idle = Callable[[tuple[str, str, int], "Connection"], None]


class Deadlines:
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


class Connection(asyncio.Protocol):
    """One keep-alive connection; answers one request at a time."""

    __slots__ = (
        "_body_framed", "_headers", "_idle", "_keep_alive", "_key", "_paused", "_status",
        "buffered",
        "chunks", "closed", "done", "exc", "head_waiter", "parser", "transport",
        "waiter",
    )  # fmt: skip

    def __init__(self, idle: Idle, key: tuple[str, str, int]) -> None:
        self._idle = idle
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
        self._idle(self._key, self)


class Response:
    """A response whose body is read at most once: whole, by chunks, lines or SSE events."""

    __slots__ = (
        "_conn", "_deadline", "_deadlines", "_idle", "_loop", "_released", "headers", "status",
    )  # fmt: skip

    def __init__(
        self,
        conn: Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
        idle: float | None,
        deadline: float | None,
        deadlines: Deadlines,
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
