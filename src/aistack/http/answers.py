"""Sending an answer, whole or streamed, the same way in both dialects.

Each dialect brings its own encoders; what is shared is the order of things: the
headers that say who answered, collecting a non-streamed answer, and a stream's
honest end (after the first byte a failure is the dialect's terminal error, never a
silent cut), with the answer closed however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aistack.core.chat import JSONObject
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.http.asgi import Request, end_stream, respond_json, send_chunk, start_stream
from aistack.service import Answer

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
    except Exception:
        log.exception("stream failed")
        answer.ctx.error = "INTERNAL"
        await send_chunk(
            req, error(GatewayError(ErrorKind.INTERNAL, "internal error while streaming"))
        )
    finally:
        await answer.aclose()
    await end_stream(req)
