"""The Anthropic Messages API (`/v1/messages`), for Claude Code and the `anthropic` SDKs:
read bytes -> dialect decode -> service -> dialect encode, over any backend.

Keys come as `x-api-key` or `Authorization: Bearer` (the app reads both). The caller's
`anthropic-beta` header goes along to an Anthropic backend; `anthropic-version` is
accepted and not needed. A quiet stream gets `ping`s (agents.keepalive).
"""

from __future__ import annotations

import logging

from msgspec.structs import replace

from aistack.core.chat import ChatRequest
from aistack.dialects.anthropic import convert
from aistack.dialects.anthropic.stream import PING, StreamEncoder, error_event
from aistack.http.answers import Keepalive, send_kept_alive, send_whole
from aistack.http.asgi import SSE_TYPE, Request, respond_json
from aistack.http.openai_routes import models as openai_models
from aistack.service import Gateway, RequestContext

log = logging.getLogger("aistack.http")

# Headers of the caller's that an Anthropic backend needs (backends/anthropic.py).
_FORWARD = (b"anthropic-beta",)


def _request(gw: Gateway, req: Request, ctx: RequestContext, counting: bool) -> ChatRequest:
    strip = tuple(gw.config.agents.strip_system_prefixes)
    r = convert.request_from_wire(req.json(), strip_system=strip, counting=counting)
    forwarded = [(k.decode(), v.decode("latin-1")) for k in _FORWARD if (v := req.header(k))]
    if forwarded:
        r = replace(r, headers=tuple(forwarded))
    if r.user and not ctx.end_user:
        ctx.end_user = r.user[:200]  # metadata.user_id
    ctx.request = r
    return r


async def messages(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = _request(gw, req, ctx, counting=False)
    mid = convert.new_id("msg")
    # Anthropic echoes the model the caller named.
    if not r.stream:
        answer = await gw.chat(ctx, r)
        await send_whole(req, answer, lambda c: convert.message_to_wire(c, r.model, mid))
        return
    enc = StreamEncoder(r.model, mid)
    await send_kept_alive(
        req,
        ctx,
        Keepalive(req, gw.config.agents.keepalive, SSE_TYPE, enc.start, PING),
        lambda: gw.chat(ctx, r),
        enc.encode,
        lambda e: error_event(convert.error_to_wire(e)),
    )


async def count_tokens(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = _request(gw, req, ctx, counting=True)
    n, exact = await gw.count_tokens(ctx, r)
    # Anthropic's answer has no place to say it; a header does.
    how = b"exact" if exact else b"estimated"
    await respond_json(req, convert.count_tokens_to_wire(n), headers=[(b"x-aistack-tokens", how)])


async def models(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """GET /v1/models: Anthropic's list format for a caller that says `anthropic-version`
    (Claude Code's model discovery), OpenAI's for everyone else."""
    if req.header(b"anthropic-version") is None:
        await openai_models(gw, req, ctx)
        return
    data = [
        convert.model_to_wire(m.name, m.card) for m in await gw.listed() if gw.visible(ctx, m.name)
    ]
    await respond_json(req, convert.models_to_wire(data))
