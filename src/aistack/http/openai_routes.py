"""The OpenAI API: read bytes -> dialect decode -> service -> dialect encode."""

from __future__ import annotations

import logging
from typing import Literal

from aistack.dialects.openai import convert
from aistack.dialects.openai.stream import StreamEncoder, error_event
from aistack.http.answers import send_stream, send_whole
from aistack.http.asgi import (
    SSE_TYPE,
    Request,
    respond_json,
)
from aistack.service import Answer, Gateway, RequestContext

log = logging.getLogger("aistack.http")


async def models(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    data = [
        convert.model_to_wire(m.name, m.card) for m in await gw.listed() if gw.visible(ctx, m.name)
    ]
    await respond_json(req, convert.models_to_wire(data))


async def model(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    name = req.params["id"]
    gw.check_visible(ctx, name)
    deps = gw.catalog.resolve(name)
    if not deps:
        deps = await gw.catalog.lookup(name, gw.shown(ctx))
    await respond_json(req, convert.model_to_wire(name, deps[0].card))


async def _send(
    req: Request,
    answer: Answer,
    stream: bool,
    include_usage: bool,
    kind: Literal["chat", "completion"],
) -> None:
    # The model that actually answered, as OpenAI reports a model snapshot.
    model = answer.served_model
    rid = convert.new_id("chatcmpl" if kind == "chat" else "cmpl")
    created = convert.now()
    if not stream:
        whole = (
            convert.chat_response_to_wire if kind == "chat" else convert.completion_response_to_wire
        )
        await send_whole(req, answer, lambda c: whole(c, model, rid, created))
        return
    enc = StreamEncoder(model, rid, created, include_usage, kind)
    # An error event and no [DONE]: the SDKs raise instead of returning a cut answer.
    await send_stream(
        req, answer, SSE_TYPE, enc.encode, lambda e: error_event(convert.error_to_wire(e))
    )


async def chat_completions(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.chat_request_from_wire(req.json())
    ctx.request = r
    answer = await gw.chat(ctx, r)
    await _send(req, answer, r.stream, r.include_usage, "chat")


async def completions(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = convert.completion_request_from_wire(req.json())
    ctx.request = r
    answer = await gw.generate(ctx, r)
    await _send(req, answer, r.stream, r.include_usage, "completion")


async def embeddings(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r, fmt = convert.embed_request_from_wire(req.json())
    ctx.request = r
    result = await gw.embed(ctx, r)
    await respond_json(req, convert.embed_response_to_wire(result, r.model, fmt))
