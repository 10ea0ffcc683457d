"""The vector store in the admin API (/admin/api/vectors...): what `aistack vectors` and
the console call. Admins only, as every /admin/api route; physical names throughout.

- GET  /admin/api/vectors            collections per app: points, disk, last write
- POST /admin/api/vectors/snapshot   {"collection"?: name, "dir"?: path} -> files written
- POST /admin/api/vectors/restore    {"snapshot": path, "collection": name} -> points
- POST /admin/api/vectors/grants     {"collection", "app", "allow": true|false}
- POST /admin/api/vectors/search     {"collection", "text", "model", "limit"?}: embeds, queries
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.dialects.qdrant import BY_NAME, Call
from aistack.http.asgi import Request, respond_json
from aistack.service import Gateway, RequestContext
from aistack.vectors.service import VectorService
from aistack.vectors.snapshots import prune
from aistack.vectors.tenancy import Caller, describe

PREFIX = "/admin/api/vectors"


def _vs(vs: VectorService | None) -> VectorService:
    if vs is None:
        raise GatewayError(ErrorKind.NOT_FOUND, "the vector store is off (vectors.enabled: false)")
    return vs


def _body(req: Request) -> dict[str, Any]:
    b = req.json()
    if not isinstance(b, dict):
        raise invalid("the body must be a JSON object")
    return b


def _str(b: dict[str, Any], name: str, required: bool = True) -> str:
    v = b.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v:
        raise invalid(f"{name}: required", param=name)
    return v


async def collections(
    vs_: VectorService | None, gw: Gateway, req: Request, ctx: RequestContext
) -> None:
    vs = _vs(vs_)
    ok, why = await vs.engine.ready()
    out = describe(vs.tenancy, await vs.stats(0))
    await respond_json(req, {"engine": vs.engine.kind, "ready": ok, "why": why, "collections": out})


async def snapshot(
    vs_: VectorService | None, gw: Gateway, req: Request, ctx: RequestContext
) -> None:
    vs = _vs(vs_)
    b = _body(req) if req.body.strip() else {}
    name = _str(b, "collection", required=False)
    d = _str(b, "dir", required=False) or vs.config.backup.dir
    if not d:
        raise invalid("dir: where to write (or set vectors.backup.dir)", param="dir")
    dest = Path(d)
    names = [name] if name else [s.name for s in await vs.stats(0)]
    made = [str(await vs.engine.snapshot(n, dest)) for n in names]
    pruned: list[Path] = []
    if not name and d == vs.config.backup.dir:
        pruned = await asyncio.to_thread(prune, dest, vs.config.backup)
    await respond_json(req, {"snapshots": made, "pruned": [str(p) for p in pruned]})


async def restore(
    vs_: VectorService | None, gw: Gateway, req: Request, ctx: RequestContext
) -> None:
    vs = _vs(vs_)
    b = _body(req)
    path = Path(_str(b, "snapshot"))
    if not await asyncio.to_thread(path.is_file):
        raise invalid(f"snapshot: no file {path}", param="snapshot")
    name = _str(b, "collection")
    points = await vs.engine.restore(path, name)
    vs._stats_at = 0.0
    await respond_json(req, {"collection": name, "points": points})


async def grants(vs_: VectorService | None, gw: Gateway, req: Request, ctx: RequestContext) -> None:
    vs = _vs(vs_)
    b = _body(req)
    name, app = _str(b, "collection"), _str(b, "app")
    g = await vs.grant(name, app, bool(b.get("allow", True)))
    await respond_json(req, {"grants": {c: sorted(a) for c, a in g.items()}})


async def search(vs_: VectorService | None, gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """The console's search box: a text embedded with `model`, the nearest points."""
    vs = _vs(vs_)
    b = _body(req)
    name, text, model = _str(b, "collection"), _str(b, "text"), _str(b, "model")
    limit = b.get("limit", 5)
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise invalid("limit: 1 to 100", param="limit")
    sizes = await vs.engine.vector_sizes(name)
    using = b.get("using") or (next(iter(sizes)) if sizes else "")
    query = {"query": {"text": text, "model": model}, "limit": limit, "with_payload": True}
    if using:
        query["using"] = using
    result = await vs.run(ctx, Caller("", admin=True), Call(BY_NAME["query"], name), query, {})
    await respond_json(req, result)
