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

from aistack.backends.connection import Connection, Deadlines, Response
from aistack.backends.wire import (
    ConnectError,
    ConnectTimeout,
    Endpoint,
    FirstByteTimeout,
    IdleTimeout,
    RemoteProtocolError,
    Timeouts,
    TotalTimeout,
    TransportError,
    TransportTimeout,
    parse_url,
)

_DEFAULT_TIMEOUTS = Timeouts()  # frozen, shared

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "Endpoint",
    "FirstByteTimeout",
    "HttpClient",
    "IdleTimeout",
    "RemoteProtocolError",
    "Response",
    "Timeouts",
    "TotalTimeout",
    "TransportError",
    "TransportTimeout",
    "parse_url",
]


class HttpClient:
    """Keep-alive connection pools, one per (scheme, host, port)."""

    def __init__(self, *, max_idle_per_host: int = 256, ssl_context: ssl.SSLContext | None = None):
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._max_idle = max_idle_per_host
        self._ssl = ssl_context
        self._closed = False
        self._deadlines: Deadlines | None = None

    def _put_idle(self, key: tuple[str, str, int], conn: Connection) -> None:
        pool = self._idle.setdefault(key, [])
        if self._closed or len(pool) >= self._max_idle:
            conn.close()
        else:
            pool.append(conn)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, ep: Endpoint, deadline: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        conn = Connection(self._put_idle, ep.key)
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
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
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
        conn: Connection,
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
            deadlines = self._deadlines = Deadlines(loop)
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
