"""The Ollama native API: read bytes -> dialect decode -> service -> dialect encode."""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

from aistack.core.errors import GatewayError
from aistack.core.models import ModelCard
from aistack.dialects.ollama import convert
from aistack.dialects.ollama.stream import StreamEncoder, error_line
from aistack.http.asgi import (
    NDJSON_TYPE,
    TEXT_TYPE,
    Request,
    end_stream,
    respond,
    respond_json,
    send_chunk,
    start_stream,
)
from aistack.service import OLLAMA_COMPAT_VERSION, Answer, Gateway, RequestContext

log = logging.getLogger("aistack.http")


def answer_headers(a: Answer) -> list[tuple[bytes, bytes]]:
    """Which model and backend actually answered (after any fallback), in both dialects;
    how many deployments were called when it took more than one."""
    h = [
        (b"x-aistack-model", a.served_model.encode()),
        (b"x-aistack-backend", a.deployment.backend.name.encode()),
    ]
    if a.ctx.attempts > 1:
        h.append((b"x-aistack-attempts", str(a.ctx.attempts).encode()))
    return h


async def root(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    await respond(req, 200, b"Ollama is running", TEXT_TYPE)


async def version(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    await respond_json(req, {"version": OLLAMA_COMPAT_VERSION})


def _with_digest(card: ModelCard) -> ModelCard:
    if card.digest:
        return card
    # Non-Ollama backends have no digest; a stable stand-in keeps clients that key on it.
    from msgspec.structs import replace

    return replace(card, digest=hashlib.sha256(f"{card.backend}/{card.name}".encode()).hexdigest())


async def tags(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    models = [
        convert.tag_to_wire(m.name, _with_digest(m.card))
        for m in await gw.listed()
        if gw.visible(ctx, m.name)
    ]
    await respond_json(req, {"models": models})


async def ps(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    models = [convert.ps_to_wire(name, m) for name, m in await gw.ps()]
    await respond_json(req, {"models": models})


async def show(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    body = req.json()
    from aistack.dialects._fields import body_object, require_model

    model = require_model(body_object(body), "model", "name")
    gw.check_visible(ctx, model)
    info, _ = await gw.show(model)
    await respond_json(req, convert.show_to_wire(info))


async def _send(
    req: Request, answer: Answer, stream: bool, model: str, kind: Literal["chat", "generate"]
) -> None:
    headers = answer_headers(answer)
    if not stream:
        try:
            whole = await answer.collect()
        finally:
            await answer.aclose()
        to_wire = (
            convert.chat_response_to_wire if kind == "chat" else convert.generate_response_to_wire
        )
        await respond_json(req, to_wire(whole, model), headers=headers)
        return
    enc = StreamEncoder(model, kind)
    try:
        await start_stream(req, NDJSON_TYPE, headers)
        async for c in answer:
            await send_chunk(req, enc.encode(c))
    except GatewayError as e:
        # After the first byte the status is sent; the error is the last line.
        answer.ctx.error = e.kind.name
        await send_chunk(req, error_line(e.message))
    except Exception:
        log.exception("stream failed")
        answer.ctx.error = "INTERNAL"
        await send_chunk(req, error_line("internal error while streaming"))
    finally:
        await answer.aclose()
    await end_stream(req)


async def chat(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.chat_request_from_wire(req.json())
    ctx.request = r
    answer = await gw.chat(ctx, r)
    await _send(req, answer, r.stream, r.model, "chat")


async def generate(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.generate_request_from_wire(req.json())
    ctx.request = r
    answer = await gw.generate(ctx, r)
    await _send(req, answer, r.stream, r.model, "generate")


async def embed(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.embed_request_from_wire(req.json())
    ctx.request = r
    result = await gw.embed(ctx, r)
    await respond_json(req, convert.embed_response_to_wire(result, r.model))


async def embeddings(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.embed_request_from_wire(req.json(), legacy=True)
    ctx.request = r
    result = await gw.embed(ctx, r)
    await respond_json(req, convert.embeddings_legacy_response_to_wire(result))
