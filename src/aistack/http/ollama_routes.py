"""The Ollama native API: read bytes -> dialect decode -> service -> dialect encode."""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

from aistack.core.models import ModelCard
from aistack.dialects.ollama import convert
from aistack.dialects.ollama.stream import StreamEncoder, error_line
from aistack.http.answers import send_stream, send_whole
from aistack.http.asgi import (
    NDJSON_TYPE,
    TEXT_TYPE,
    Request,
    respond,
    respond_json,
)
from aistack.service import OLLAMA_COMPAT_VERSION, Answer, Gateway, RequestContext

log = logging.getLogger("aistack.http")


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
        # Image models (ComfyUI) are for /v1/images, not for Ollama's chat clients.
        if "image" not in m.card.capabilities and gw.visible(ctx, m.name)
    ]
    await respond_json(req, {"models": models})


async def ps(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    # What is loaded, as far as the caller's key may see (its allowlist, as /api/tags).
    models = [convert.ps_to_wire(name, m) for name, m in await gw.ps() if gw.visible(ctx, name)]
    await respond_json(req, {"models": models})


async def show(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    body = req.json()
    from aistack.dialects._fields import body_object, require_model

    model = require_model(body_object(body), "model", "name")
    gw.check_visible(ctx, model)
    info, _ = await gw.show(model, ctx)
    await respond_json(req, convert.show_to_wire(info))


async def _send(
    req: Request, answer: Answer, stream: bool, model: str, kind: Literal["chat", "generate"]
) -> None:
    # The model field echoes the name the caller asked for, as Ollama does.
    if not stream:
        whole = (
            convert.chat_response_to_wire if kind == "chat" else convert.generate_response_to_wire
        )
        await send_whole(req, answer, lambda c: whole(c, model))
        return
    enc = StreamEncoder(model, kind)
    # After the first byte the status is sent; an error is the last line.
    await send_stream(req, answer, NDJSON_TYPE, enc.encode, lambda e: error_line(e.message))


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
