"""The OpenAI Responses API (`/v1/responses`), for Codex and the `openai` SDKs' responses
calls, over any backend.

`store: true` (OpenAI's default) keeps the response and its input items in the database
(gw.responses), owned by the caller's key, so `previous_response_id`, GET, DELETE and
input_items work on every replica; it is written before the answer's last byte, so the
next turn can follow at once from anywhere. `store: false` (Codex) keeps nothing.
"""

from __future__ import annotations

import logging
import os
import time

import orjson
from msgspec.structs import replace

from aistack.core.chat import JSONObject
from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.openai import convert
from aistack.dialects.openai import responses as rs
from aistack.dialects.openai.responses_stream import KEEPALIVE, StreamEncoder
from aistack.http.answers import Keepalive, answer_headers, send_kept_alive
from aistack.http.asgi import (
    SSE_TYPE,
    Request,
    respond_json,
)
from aistack.service import Gateway, RequestContext
from aistack.store.responses import StoredResponse

log = logging.getLogger("aistack.http")


def _rid() -> str:
    return "resp_" + os.urandom(16).hex()


def _not_found(rid: str) -> GatewayError:
    return GatewayError(
        ErrorKind.NOT_FOUND, f"Response with id '{rid}' not found.", param="response_id"
    )


async def _history(gw: Gateway, ctx: RequestContext, call: rs.ResponsesCall) -> list[JSONObject]:
    """The items of the conversation `previous_response_id` names: every turn's input
    and output, oldest first (instructions are not carried over, as OpenAI does)."""
    prev = call.previous_response_id
    if prev is None:
        return []
    found = await gw.responses.chain(prev, ctx.key_id)
    if found is None:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"Previous response with id '{prev}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items: list[JSONObject] = []
    for r in found:
        items += orjson.loads(r.input)
        items += orjson.loads(r.response).get("output") or []
    return items


async def create(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    call = rs.call_from_wire(req.json())
    if call.dropped_tools:
        log.info("responses: hosted tools dropped (no backend runs them): %s", call.dropped_tools)
    r = call.request
    history = await _history(gw, ctx, call)
    if history:
        r = replace(r, messages=rs.messages_from_items(history + call.items, call.instructions))
    ctx.request = r
    base = rs.response_base(call, _rid(), r.model, int(time.time()))

    async def keep(response: JSONObject) -> None:
        if not call.store:
            return
        row = StoredResponse(
            id=response["id"],
            owner=ctx.key_id,
            created_at=int(time.time() * 1000),
            previous_id=call.previous_response_id,
            model=r.model,
            response=orjson.dumps(response).decode(),
            input=orjson.dumps(call.items).decode(),
        )
        await gw.responses.put(row)

    if not r.stream:
        answer = await gw.chat(ctx, r)
        try:
            whole = await answer.collect()
        finally:
            await answer.aclose()
        response = rs.response_to_wire(base, whole)
        await keep(response)
        await respond_json(req, response, headers=answer_headers(answer))
        return

    enc = StreamEncoder(base)

    async def kept() -> None:
        if enc.response is not None:
            await keep(enc.response)  # before the client can ask for it

    await send_kept_alive(
        req,
        ctx,
        Keepalive(req, gw.config.agents.keepalive, SSE_TYPE, enc.start, KEEPALIVE),
        lambda: gw.chat(ctx, r),
        enc.encode,
        lambda e: enc.failed(convert.error_to_wire(e)["error"]),
        kept,
    )


async def _stored(gw: Gateway, req: Request, ctx: RequestContext) -> StoredResponse:
    rid = req.params["id"]
    found = await gw.responses.get(rid, ctx.key_id)
    if found is None:
        raise _not_found(rid)
    return found


async def retrieve(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    found = await _stored(gw, req, ctx)
    await respond_json(req, orjson.loads(found.response))


async def delete(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    rid = req.params["id"]
    if not await gw.responses.delete(rid, ctx.key_id):
        raise _not_found(rid)
    await respond_json(req, rs.deleted_to_wire(rid))


async def input_items(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    found = await _stored(gw, req, ctx)
    order = b"asc" if b"order=asc" in req.query else b"desc"
    page = rs.input_items_to_wire(orjson.loads(found.input), order.decode())
    await respond_json(req, page)
