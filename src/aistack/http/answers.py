"""Sending an answer, whole or streamed, the same way in both dialects.

Each dialect brings its own encoders; what is shared is the order of things: the
headers that say who answered, collecting a non-streamed answer, and a stream's
honest end (after the first byte a failure is the dialect's terminal error, never a
silent cut), with the answer closed however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aistack.core.chat import JSONObject
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.http.asgi import (
    CUT,
    SSE_TYPE,
    Request,
    end_stream,
    respond_json,
    send_chunk,
    start_stream,
    was_cut,
)
from aistack.service import Answer, RequestContext

log = logging.getLogger("aistack.http")


def answer_headers(a: Answer) -> list[tuple[bytes, bytes]]:
    """Which model and backend actually answered, and after how many attempts."""
    h = [
        (b"x-aistack-model", a.served_model.encode()),
        (b"x-aistack-backend", a.deployment.backend.name.encode()),
    ]
    if a.ctx.attempts > 1:
        h.append((b"x-aistack-attempts", str(a.ctx.attempts).encode()))
    return h


async def send_whole(req: Request, answer: Answer, to_wire: Callable[[Chunk], JSONObject]) -> None:
    try:
        whole = await answer.collect()
    finally:
        await answer.aclose()
    await respond_json(req, to_wire(whole), headers=answer_headers(answer))


async def send_stream(
    req: Request,
    answer: Answer,
    content_type: bytes,
    encode: Callable[[Chunk], bytes],
    error: Callable[[GatewayError], bytes],
) -> None:
    try:
        await start_stream(req, content_type, answer_headers(answer))
        async for c in answer:
            await send_chunk(req, encode(c))
    except GatewayError as e:
        answer.ctx.error = e.kind.name
        await send_chunk(req, error(e))
    except asyncio.CancelledError:
        if not was_cut(req):
            raise  # the client went away
        await _cut(req, answer.ctx, error)
    except Exception:
        log.exception("stream failed")
        answer.ctx.error = "INTERNAL"
        await send_chunk(
            req, error(GatewayError(ErrorKind.INTERNAL, "internal error while streaming"))
        )
    finally:
        await answer.aclose()
    await end_stream(req)


async def _cut(req: Request, ctx: RequestContext, error: Callable[[GatewayError], bytes]) -> None:
    """The server's shutdown grace ran out under this stream: end it with the dialect's
    error event, as any broken stream ends (before the first byte: a 503 status)."""
    if not req.responded:
        raise CUT
    ctx.error = CUT.kind.name
    log.warning("%s %s: stream cut by the server's shutdown", req.method, req.path)
    await send_chunk(req, error(CUT))


class Keepalive:
    """Keeps a quiet stream alive: after `every` seconds without a byte (a backend
    loading a model, thinking, writing a long tool call), it opens the stream if nothing
    was sent yet (status 200 and the dialect's `opening` events) and sends `ping`, again
    every `every` seconds until something else is sent.

    One timer per stream, checked rarely; `touch()` after each send is one clock read.
    Once it has opened the stream, a failure can no longer be a status: the route sends
    its dialect's error event instead (`opened`).
    """

    __slots__ = (
        "_content_type", "_every", "_handle", "_last", "_loop", "_opening", "_ping", "_req",
        "_task", "closed", "opened",
    )  # fmt: skip

    def __init__(
        self,
        req: Request,
        every: float,
        content_type: bytes,
        opening: Callable[[], bytes],
        ping: bytes,
    ) -> None:
        self._req = req
        self._every = every
        self._content_type = content_type
        self._opening = opening
        self._ping = ping
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._task: asyncio.Task[None] | None = None
        self._handle = self._loop.call_later(every, self._tick) if every > 0 else None
        self.closed = False
        self.opened = False

    def touch(self) -> None:
        self._last = self._loop.time()

    def _tick(self) -> None:
        self._handle = None
        if self.closed:
            return
        now = self._loop.time()
        wait = self._every - (now - self._last)
        if wait <= 0:
            self._last = now
            wait = self._every
            if self._task is None or self._task.done():
                self._task = self._loop.create_task(self._send())
        self._handle = self._loop.call_later(wait, self._tick)

    async def _send(self) -> None:
        req = self._req
        if self.closed or req.complete:
            return
        try:
            if not req.responded:
                self.opened = True
                await start_stream(req, self._content_type)
                await send_chunk(req, self._opening() + self._ping)
            else:
                await send_chunk(req, self._ping)
        except Exception as e:  # the client went away: the request's own task sees it
            log.debug("keep-alive not sent: %s", e)

    async def settle(self) -> bool:
        """Wait for a keep-alive being written; whether the stream is open."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
        return self.opened or self._req.responded

    async def close(self) -> None:
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self.settle()


async def send_kept_alive(
    req: Request,
    ctx: RequestContext,
    ka: Keepalive,
    start: Callable[[], Awaitable[Answer]],
    encode: Callable[[Chunk], bytes],
    error: Callable[[GatewayError], bytes],
    before_last: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """A stream of the agents' dialects, kept alive by `ka` while `start` waits for the
    backend: a failure before any byte is the caller's status (raised); once `ka` has
    opened the stream, or after the first chunk, it is the dialect's `error` event.
    `before_last` runs once the last chunk is encoded and before it is sent."""
    try:
        try:
            answer = await start()
        except (GatewayError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError):
                if not was_cut(req):
                    raise  # the client went away
                e = CUT
            if not await ka.settle():
                raise e from None  # nothing sent yet: a real status
            ctx.error = e.kind.name
            await send_chunk(req, error(e))
            await end_stream(req)
            return
        if not await ka.settle():
            await start_stream(req, SSE_TYPE, answer_headers(answer))
        try:
            async for c in answer:
                data = encode(c)
                if c.finish is not None and before_last is not None:
                    await before_last()
                await send_chunk(req, data)
                ka.touch()
        except GatewayError as e:
            ctx.error = e.kind.name
            await send_chunk(req, error(e))
        except asyncio.CancelledError:
            if not was_cut(req):
                raise  # the client went away
            await _cut(req, ctx, error)
        finally:
            await answer.aclose()
    finally:
        await ka.close()
    await end_stream(req)
