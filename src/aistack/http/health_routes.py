"""Operational routes: `/health` for people and dashboards, live and ready for orchestrators.

None of them calls a model or a backend: they report what the background probes and
the requests have already seen, so they stay cheap enough to poll every second.
"""

from __future__ import annotations

from aistack.http.asgi import Request, respond_json
from aistack.routing.health import report
from aistack.service import Gateway, RequestContext


async def health(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """Every backend and deployment: state, last error, latency. Always 200."""
    body = report(gw.router)
    ready, why = gw.ready()
    body["ready"] = ready
    if not ready:
        body["reason"] = why
    await respond_json(req, body)


async def live(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """The process serves HTTP (liveness: restart it if this fails)."""
    await respond_json(req, {"status": "ok"})


async def ready(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """200 when this replica should get traffic, 503 (with the reason) when not."""
    ok, why = gw.ready()
    await respond_json(
        req, {"status": "ready" if ok else "not ready", "reason": why}, 200 if ok else 503
    )
