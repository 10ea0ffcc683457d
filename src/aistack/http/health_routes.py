"""Operational routes: `/health` for people and dashboards, live and ready for orchestrators.

None of them calls a model or a backend: they report what the background probes and
the requests have already seen, so they stay cheap enough to poll every second.
"""

from __future__ import annotations

from typing import Any

from aistack.http.asgi import Request, respond_json
from aistack.http.auth import entitled
from aistack.routing.health import report
from aistack.service import Gateway, RequestContext


async def health(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """Every backend and deployment: state, last error, latency. Always 200.

    The details (backend URLs, error texts) are for admins and keys with scope
    `metrics` (or everyone with auth.public_health); anyone else gets the summary."""
    full = report(gw.router)
    for b in full.get("backends", []):
        devices = getattr(gw.backends.get(b["name"]), "devices", None)
        if devices:
            b["devices"] = devices  # ComfyUI's /system_stats: its GPU and memory
    ready, why = gw.ready()
    gate = gw.gate
    sessions = gate.sessions if gate is not None and gw.config.console.enabled else None
    if gw.config.auth.public_health or await entitled(gate, sessions, req, "metrics"):
        body: dict[str, Any] = full
    else:
        body = {
            "status": full.get("status"),
            "details": "an admin or a key with scope 'metrics' sees every backend here "
            "(or set auth.public_health: true)",
        }
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
