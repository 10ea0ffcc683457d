"""The vector store's entries in the route table: Qdrant's REST API, one route per
operation (dialects/qdrant.py lists them), under /qdrant on the main port and at the
root of the vector listener (`vectors.listen`); and its part of the admin API.

Thin: the table has authenticated the caller (an aistack key, sent as Qdrant's
`api-key` header or `Authorization: Bearer`); here the caller becomes an app (its key's
name) or an admin (the master key), the key's rate limits are applied, and the vector
service runs the operation. Every error answers in Qdrant's shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from aistack.access.gate import MASTER
from aistack.core.errors import GatewayError
from aistack.core.operations import Operation
from aistack.dialects import qdrant as wire
from aistack.dialects.openai.images import parse_multipart
from aistack.http.asgi import JSON_TYPE, TEXT_TYPE, Request, respond
from aistack.http.table import (
    ADMIN,
    GET,
    KEY,
    POST,
    PUBLIC,
    VIEWER,
    Entry,
    Handler,
    Mount,
    Route,
)
from aistack.service import Gateway, RequestContext
from aistack.vectors import admin
from aistack.vectors.service import VectorService
from aistack.vectors.tenancy import ANONYMOUS, Caller

PREFIX = "/qdrant"
OCTETS = b"application/octet-stream"


def api(vs: VectorService) -> tuple[Route, ...]:
    """Qdrant's REST API, relative to its root."""
    return tuple(_route(vs, op) for op in wire.OPS)


def routes(vs: VectorService) -> list[Entry]:
    """What the main port serves: the API under /qdrant, and the admin routes."""
    return [Mount(PREFIX, api(vs), "qdrant"), *admin_routes(vs)]


def admin_routes(vs: VectorService) -> list[Route]:
    def bind(fn: Callable[..., Awaitable[None]]) -> Handler:
        async def handler(gw: Gateway, req: Request, ctx: RequestContext) -> None:
            await fn(vs, gw, req, ctx)

        return handler

    p = admin.PREFIX
    out = [Route(GET, p, bind(admin.collections), "plain", ADMIN, name="vectors")]
    for name in ("snapshot", "restore", "grants"):
        fn = getattr(admin, name)
        out.append(Route(POST, f"{p}/{name}", bind(fn), "plain", ADMIN, name=f"vectors_{name}"))
    # A search changes nothing: read-only console users may run it too.
    search = Route(POST, f"{p}/search", bind(admin.search), "plain", VIEWER, name="vectors_search")
    out.append(search)
    return out


def _route(vs: VectorService, op: wire.Op) -> Route:
    public = op.access == "public"

    async def handler(gw: Gateway, req: Request, ctx: RequestContext) -> None:
        if public:
            await _public(vs, req, op.name)
        else:
            await _run(vs, gw, req, ctx, op)

    return Route(
        (op.method,),
        op.path.replace("{c}", "{collection}"),
        handler,
        "qdrant",
        PUBLIC if public else KEY,
        Operation.NONE if public else Operation.VECTOR,
        name=f"qdrant.{op.name}",
        body=op.body,
    )


def caller_of(ctx: RequestContext) -> Caller:
    key = ctx.key
    if key is MASTER:
        return Caller("", admin=True)
    return Caller(key.name if key is not None else ANONYMOUS)


async def _run(
    vs: VectorService, gw: Gateway, req: Request, ctx: RequestContext, op: wire.Op
) -> None:
    t0 = time.perf_counter()
    p = req.params
    arg = p.get("id") or p.get("field") or p.get("snapshot") or ""
    call = wire.Call(op, p.get("collection", ""), arg)
    ctx.model = call.collection
    if gw.gate is not None and ctx.key is not None:
        await gw.gate.admit_call(ctx)
    if op.name == "upload_snapshot":
        ctype = (req.header(b"content-type") or b"").decode("latin-1")
        try:
            _, files = parse_multipart(req.body, ctype)
        except GatewayError:
            files = {}
        if "snapshot" not in files:
            raise wire.bad("snapshot: send the file as the multipart field `snapshot`")
        done = await vs.recover_upload(ctx, caller_of(ctx), call, files["snapshot"][1])
        await respond(req, 200, wire.ok(done, time.perf_counter() - t0), JSON_TYPE)
        return
    body: dict[str, Any] = {}
    if op.body and req.body.strip():
        try:
            parsed = orjson.loads(req.body)
        except orjson.JSONDecodeError as e:
            raise wire.bad(f"invalid JSON in request body: {e}") from None
        body = wire.obj(parsed)
    params = dict(parse_qsl(req.query.decode("latin-1"))) if req.query else {}
    result = await vs.run(ctx, caller_of(ctx), call, body, params)
    if op.name == "get_snapshot":  # the file itself, as Qdrant sends it
        data = result if isinstance(result, bytes) else await asyncio.to_thread(result.read_bytes)
        await respond(req, 200, data, OCTETS)
        return
    await respond(req, 200, wire.ok(result, time.perf_counter() - t0), JSON_TYPE)


async def _public(vs: VectorService, req: Request, name: str) -> None:
    if name == "root":
        info = {
            "title": "qdrant - vector search engine",
            "version": wire.QDRANT_API_VERSION,
            "commit": None,
            "aistack": vs.gateway.version,
            "engine": vs.engine.kind,
        }
        await respond(req, 200, orjson.dumps(info), JSON_TYPE)
        return
    if name == "readyz":
        ok, why = await vs.engine.ready()
        if not ok:
            await respond(req, 503, f"not ready: {why}".encode(), TEXT_TYPE)
            return
    await respond(req, 200, f"{name} check passed".encode(), TEXT_TYPE)
