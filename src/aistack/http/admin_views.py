"""The admin API's views for the console: who am I, the overview, latency percentiles,
app snippets, and a recent request's prompt and answer (docs/admin-api.md).

Admin routes like the rest of /admin/api (see routes.py): the console's pages fetch
them with the session cookie, as any script could with the master key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aistack.access.keys import SpecError, parse_since
from aistack.backends.base import loaded_models
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.models import LoadedModel
from aistack.doctor import snippets
from aistack.http.asgi import Request, query_of, respond_json
from aistack.observability.content import ContentLog
from aistack.routing.health import report
from aistack.service import Gateway, RequestContext
from aistack.store.calendar import day_of, day_start_ms, now_ms

KEY_PLACEHOLDER = "YOUR_AISTACK_KEY"


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    i = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return round(sorted_values[i], 1)


def _stats(values: list[float]) -> dict[str, Any]:
    v = sorted(values)
    return {
        "count": len(v),
        "p50": _percentile(v, 50),
        "p90": _percentile(v, 90),
        "p95": _percentile(v, 95),
        "p99": _percentile(v, 99),
    }


class AdminViews:
    """The views' state: captured content (when kept) and a short cache of /api/ps."""

    def __init__(self, contents: ContentLog | None = None) -> None:
        self.contents = contents
        self._ps: tuple[float, dict[str, Any]] | None = None
        self._ps_lock = asyncio.Lock()

    async def me(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        who = ctx.admin
        assert who is not None  # an admin route: check_admin set it
        gate = gw.gate
        cap = self.contents is not None
        await respond_json(
            req,
            {
                "name": who.name,
                "role": who.role,
                "via": who.via,
                "auth_mode": ("open" if gate.open else "keys") if gate is not None else "none",
                "master_key": gate is not None and gate.has_master,
                "capture_content": cap,
                "version": gw.version,
            },
        )

    async def _loaded(self, gw: Gateway) -> dict[str, Any]:
        """Each backend's loaded models (/api/ps), asked at most every 3 s."""
        async with self._ps_lock:
            now = time.monotonic()
            if self._ps is not None and now - self._ps[0] < 3.0:
                return self._ps[1]

            async def one(name: str) -> tuple[str, list[LoadedModel] | str]:
                try:
                    async with asyncio.timeout(3):
                        return name, await loaded_models(gw.backends[name])
                except TimeoutError:
                    return name, "no answer in 3 s"
                except GatewayError as e:
                    return name, e.message

            got = dict(await asyncio.gather(*(one(n) for n in gw.backends)))
            out: dict[str, Any] = {}
            for name, v in got.items():
                if isinstance(v, str):
                    out[name] = {"error": v, "models": []}
                else:
                    gw.router.observe_loaded(name, v)  # the router's map, fresh too
                    out[name] = {
                        "error": "",
                        "models": [
                            {
                                "name": m.name,
                                "size": m.size,
                                "size_vram": m.size_vram,
                                "expires_at": m.expires_at,
                                "context_length": m.context_length,
                            }
                            for m in v
                        ],
                    }
            self._ps = (now, out)
            return out

    async def overview(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """Backends and deployments with state and latency, loaded models and VRAM,
        requests and errors in the last 5 minutes and today, spend today."""
        health = report(gw.router)
        ready, why = gw.ready()
        loaded = await self._loaded(gw)
        now = now_ms()
        today: dict[str, dict[str, Any]] = {}
        recent: dict[str, dict[str, Any]] = {}
        total: dict[str, Any] = {}
        gate = gw.gate
        ledger = gate is not None and gate.ledger_enabled
        if gate is not None and ledger:
            await gate.ledger.flush()
            store = gate.store
            t = await store.run(store.report, ["backend"], day_start_ms(day_of(now)))
            r = await store.run(store.report, ["backend"], now - 300_000)
            today = {row.group["backend"]: row.as_dict() for row in t.rows}
            recent = {row.group["backend"]: row.as_dict() for row in r.rows}
            total = t.total.as_dict()
        backends = []
        for b in health["backends"]:
            name = b["name"]
            lm = loaded.get(name, {"error": "", "models": []})
            for m in lm["models"]:
                m["running"] = gw.router.in_flight_on(name, m["name"])
            backends.append(
                {
                    **b,
                    "loaded": lm["models"],
                    "loaded_error": lm["error"],
                    "vram_bytes": sum(m["size_vram"] for m in lm["models"]),
                    "requests_5m": recent.get(name, {}).get("requests", 0),
                    "errors_5m": recent.get(name, {}).get("errors", 0),
                    "requests_today": today.get(name, {}).get("requests", 0),
                    "errors_today": today.get(name, {}).get("errors", 0),
                    "spend_today": today.get(name, {}).get("cost", 0.0),
                    "tokens_today": today.get(name, {}).get("tokens_in", 0)
                    + today.get(name, {}).get("tokens_out", 0),
                }
            )
        models = [
            {"name": m.name, "backends": list(m.backends), "alias_of": m.alias_of,
             "capabilities": list(m.card.capabilities)}
            for m in await gw.listed()
        ]  # fmt: skip
        await respond_json(
            req,
            {
                "generated_at": now,
                "status": health["status"],
                "ready": ready,
                "reason": "" if ready else why,
                "ledger": ledger,
                "backends": backends,
                "deployments": health["deployments"],
                "memory": health["memory"],
                "queues": health["queues"],
                "models": models,
                "today": total,
                "window_s": 300,
                "requests_5m": sum(v.get("requests", 0) for v in recent.values()),
                "errors_5m": sum(v.get("errors", 0) for v in recent.values()),
            },
        )

    async def latency(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """Percentiles of duration and time to first token, per model and per day."""
        gate = gw.gate
        if gate is None or not gate.ledger_enabled:
            raise GatewayError(ErrorKind.NOT_FOUND, "the usage ledger is off")
        q = query_of(req)
        try:
            since = parse_since(q.get("since", "7d"))
        except SpecError as e:
            raise invalid(str(e), param="since") from None
        await gate.ledger.flush()
        rows = await gate.store.run(gate.store.latency_samples, since)
        per_model: dict[str, tuple[list[float], list[float]]] = {}
        per_day: dict[str, tuple[list[float], list[float]]] = {}
        for ts, model, _backend, dur, ttft in rows:
            for key, bucket in ((model, per_model), (day_of(int(ts)), per_day)):
                d, f = bucket.setdefault(key, ([], []))
                d.append(float(dur))
                if ttft is not None:
                    f.append(float(ttft))

        def table(b: dict[str, tuple[list[float], list[float]]], k: str) -> list[dict[str, Any]]:
            return [
                {k: name, "duration_ms": _stats(d), "ttft_ms": _stats(f)}
                for name, (d, f) in sorted(b.items())
            ]

        await respond_json(
            req,
            {
                "since": since,
                "samples": len(rows),
                "models": table(per_model, "model"),
                "days": table(per_day, "day"),
            },
        )

    async def snippets(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """The settings that point an app at this gateway (doctor/snippets.py)."""
        q = query_of(req)
        app = q.get("app", "openai")
        via = q.get("via") or None
        if via not in (None, "ollama", "openai"):
            raise invalid("via: ollama or openai", param="via")
        every = await gw.listed()
        listed = [m.name for m in every if "image" not in m.card.capabilities]
        drawn = [m.name for m in every if "image" in m.card.capabilities]
        model = q.get("model") or (listed[0] if listed else "MODEL")
        base = gw.config.server.public_url
        if not base:
            host = (req.header(b"host") or b"127.0.0.1").decode("latin-1")
            base = f"{req.scheme}://{host}"
        gate = gw.gate
        key = KEY_PLACEHOLDER if gate is not None and not gate.open else None
        try:
            s = snippets.build(
                app, base=base, model=model, key=key, via=via,  # type: ignore[arg-type]
                images=drawn[0] if drawn else None,
            )  # fmt: skip
        except snippets.SnippetError as e:
            raise invalid(str(e), param="app") from None
        await respond_json(
            req,
            {
                "apps": [{"id": k, "title": v} for k, v in snippets.APPS.items()],
                "both": list(snippets._BOTH),
                "models": listed,
                "key_placeholder": key,
                "snippet": s.to_json(),
                "env": snippets.render_env(s) if s.env else "",
                "k8s": snippets.render_k8s(s) if s.env else "",
                "config": snippets.render_config(s),
            },
        )

    async def content(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """A recent request's prompt and answer, when content capture is on."""
        rid = query_of(req).get("request_id", "")
        if self.contents is None:
            await respond_json(
                req,
                {
                    "capture": False,
                    "content": None,
                    "hint": "Prompts and answers are not kept. To see them here, set "
                    "tracing.capture_content: true in the config and restart; they "
                    "can hold anything a user typed.",
                },
            )
            return
        found = self.contents.get(rid) if rid else None
        await respond_json(
            req,
            {
                "capture": True,
                "content": found,
                "hint": ""
                if found
                else "Not kept for this request: only the newest 500 model requests of "
                "this replica since it started are.",
            },
        )
