"""The ASGI application: one table of routes for both dialects, errors in the caller's dialect.

A route belongs to a dialect, and every error on it (a bad body, an unknown model, a
backend down) is rendered in that dialect with the right status. A caller's mistake is
never a 500; an unexpected failure is a 500 with no traceback in the body.

A caller that disconnects cancels the request task, which closes the upstream
connection, so the backend stops generating.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from aistack.access.gate import Gate
from aistack.console import Console, cross_site
from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.ollama.convert import error_to_wire as ollama_error
from aistack.dialects.openai.convert import error_to_wire as openai_error
from aistack.http import admin_routes as ad
from aistack.http import fleet_routes as fl
from aistack.http import health_routes as hr
from aistack.http import ollama_routes as ol
from aistack.http import openai_routes as oa
from aistack.http.asgi import (
    JSON_TYPE,
    TEXT_TYPE,
    AsgiRequest,
    ClientGone,
    Receive,
    Request,
    Scope,
    Send,
    Watches,
    respond,
)
from aistack.observability import Observability
from aistack.observability.tracing import parse_traceparent
from aistack.service import Gateway, RequestContext
from aistack.store import StoreError

log = logging.getLogger("aistack.http")

Handler = Callable[[Gateway, Request, RequestContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    dialect: str  # "ollama" | "openai" | "admin"
    body: bool = False  # read the request body before calling
    public: bool = False  # answered without a key (liveness and version probes)
    admin: bool = False  # manages the gateway (not an admin-dialect route): check_admin
    viewer: bool = False  # read-only admins may call it too, although it is not a GET

    @property
    def name(self) -> str:
        return self.handler.__name__


def _routes() -> dict[str, dict[str, Route]]:
    def get(h: Handler, dialect: str = "ollama", public: bool = False) -> dict[str, Route]:
        r = Route(h, dialect, public=public)
        return {"GET": r, "HEAD": r}

    def post(h: Handler, dialect: str = "ollama") -> dict[str, Route]:
        return {"POST": Route(h, dialect, body=True)}

    return {
        "/": get(ol.root, public=True),
        "/api/version": get(ol.version, public=True),
        "/api/tags": get(ol.tags),
        "/api/ps": get(ol.ps),
        "/api/show": post(ol.show),
        "/api/chat": post(ol.chat),
        "/api/generate": post(ol.generate),
        "/api/embed": post(ol.embed),
        "/api/embeddings": post(ol.embeddings),
        "/v1/models": get(oa.models, "openai"),
        "/v1/chat/completions": post(oa.chat_completions, "openai"),
        "/v1/completions": post(oa.completions, "openai"),
        "/v1/embeddings": post(oa.embeddings, "openai"),
        # Health is public: orchestrators probe it without keys, and it calls no model.
        "/health": get(hr.health, "admin", public=True),
        "/health/live": get(hr.live, "admin", public=True),
        "/health/ready": get(hr.ready, "admin", public=True),
        f"{ad.PREFIX}/status": get(ad.status, "admin"),
        f"{ad.PREFIX}/keys": {**get(ad.list_keys, "admin"), **post(ad.create_key, "admin")},
        f"{ad.PREFIX}/usage": get(ad.usage, "admin"),
        f"{ad.PREFIX}/requests": get(ad.requests, "admin"),
        f"{ad.PREFIX}/models": get(fl.models, "admin"),
        f"{ad.PREFIX}/sync": {**get(fl.sync_plan, "admin"), **post(fl.sync_run, "admin")},
        # Model management, admin only: one Ollama instance, by docs/fleet.md's rule.
        "/api/pull": {"POST": Route(fl.pull, "ollama", body=True, admin=True)},
        "/api/delete": {"DELETE": Route(fl.delete, "ollama", body=True, admin=True)},
        "/api/copy": {"POST": Route(fl.copy, "ollama", body=True, admin=True)},
    }


def _dialect_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/admin/"):
        return "admin"
    return "ollama"


def presented_key(req: Request) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` (OpenAI and Ollama clients), or
    `x-api-key: KEY` (Anthropic-style clients). Other Authorization schemes are not ours."""
    auth = req.header(b"authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(b" ")
        value = value.strip()
        if scheme.lower() == b"bearer" and value:
            return value.decode("latin-1")
    key = req.header(b"x-api-key")
    if key is not None and key.strip():
        return key.strip().decode("latin-1")
    return None


def end_user(req: Request) -> str:
    """Who is behind an app that says so: Open WebUI's forwarded user headers."""
    v = (
        req.header(b"x-openwebui-user-email")
        or req.header(b"x-openwebui-user-name")
        or req.header(b"x-openwebui-user-id")
    )
    return v.decode("utf-8", "replace")[:200] if v else ""


# Ollama's CORS defaults: local origins on any port, plus app and editor schemes.
_LOCAL_ORIGIN = re.compile(
    r"^(https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?"
    r"|app://.*|file://.*|tauri://.*|vscode-webview://.*|vscode-file://.*)$"
)
_CORS_HEADERS = (
    b"Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
    b"x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
    b"x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
    b"x-stainless-timeout, x-request-id"
)


METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_RID_PREFIX = os.urandom(4).hex()
_rids = itertools.count(1)
_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(given: bytes | None) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    if given is not None and _RID_OK.match(given):
        return given.decode()
    return f"{_RID_PREFIX}{next(_rids):08x}"


def error_body(dialect: str, e: GatewayError) -> bytes:
    return orjson.dumps(openai_error(e) if dialect != "ollama" else ollama_error(e))


class App:
    def __init__(self, gateway: Gateway, obs: Observability | None = None) -> None:
        self.gateway = gateway
        self.obs = obs
        self.routes = _routes()
        self._watches = Watches()
        if obs is not None and obs.metrics is not None:
            metrics = obs.metrics

            async def scrape(gw: Gateway, req: Request, ctx: RequestContext) -> None:
                await respond(req, 200, metrics.expose().encode(), METRICS_TYPE)

            scrape.__name__ = "metrics"
            r = Route(scrape, "admin", public=not obs.metrics_auth)
            self.routes["/metrics"] = {"GET": r, "HEAD": r}
        self.tracing = obs is not None and obs.tracer is not None
        self.capture = obs is not None and obs.capture
        # The web console (/ui): more entries in the table, nothing per API request.
        self.console: Console | None = None
        if gateway.config.console.enabled:
            self.console = Console(gateway, capture=self.capture)
            for path, specs in self.console.routes().items():
                self.routes[path] = {
                    m: Route(r.handler, r.dialect, r.body, r.public, r.admin, r.viewer)
                    for m, r in specs.items()
                }
        self.max_body = gateway.config.server.max_body_bytes
        self.cors_origins = set(gateway.config.server.cors_origins)
        self._started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (ASGI test clients, ASGI servers); `aistack serve` runs
        `aistack.http.server` instead, which calls `handle` directly."""
        kind = scope["type"]
        if kind == "http":
            await self.handle(AsgiRequest(scope, receive, send, self._watches))
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    # -- lifespan

    async def startup(self) -> str | None:
        """Start the gateway; why it could not, or None."""
        try:
            await self.gateway.start()
        except StoreError as e:
            # Expected and actionable ("run aistack db upgrade"): one line.
            log.error("startup failed: %s", e)
            return str(e)
        except Exception as e:
            log.exception("startup failed")
            return str(e) or type(e).__name__
        self._started.set()
        return None

    async def shutdown(self) -> None:
        await self.gateway.close()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                failed = await self.startup()
                if failed is not None:
                    await send({"type": "lifespan.startup.failed", "message": failed})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests

    def _find(self, path: str) -> tuple[dict[str, Route] | None, str]:
        table = self.routes.get(path)
        if table is not None:
            return table, path
        if "//" in path or (path.endswith("/") and path != "/"):
            # Clients that join a base URL ending in '/' send //api/chat or a trailing '/'.
            norm = re.sub(r"/{2,}", "/", path).rstrip("/") or "/"
            table = self.routes.get(norm)
            if table is not None:
                return table, norm
            path = norm
        if path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            r = Route(oa.model, "openai")
            return {"GET": r, "HEAD": r}, path
        keys = f"{ad.PREFIX}/keys/"
        if path.startswith(keys) and len(path) > len(keys) and "/" not in path[len(keys) :]:
            return {"DELETE": Route(ad.revoke_key, "admin")}, path
        return None, path

    def _cors(self, req: Request) -> bool:
        origin = req.header(b"origin")
        if origin is None:
            return False
        o = origin.decode("latin-1")
        if _LOCAL_ORIGIN.match(o) or o in self.cors_origins or "*" in self.cors_origins:
            req.extra_headers += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            return True
        return False

    async def handle(self, req: Request) -> None:
        """Answer one request, whichever server carried it."""
        table, path = self._find(req.path)
        req.path = path
        dialect = _dialect_of(path)
        allowed = self._cors(req)
        if req.method == "OPTIONS" and req.header(b"access-control-request-method"):
            status = 204 if allowed else 403
            await respond(
                req,
                status,
                b"",
                TEXT_TYPE,
                [
                    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, HEAD, OPTIONS"),
                    (b"access-control-allow-headers", _CORS_HEADERS),
                    (b"access-control-max-age", b"600"),
                ],
            )
            return
        if table is None:
            await self._not_found(req, dialect)
            return
        route = table.get(req.method)
        if route is None:
            allow = ", ".join(table).encode()
            if dialect != "ollama":
                e = GatewayError(ErrorKind.INVALID_REQUEST, f"method {req.method} not allowed")
                await respond(req, 405, error_body(dialect, e), JSON_TYPE, [(b"allow", allow)])
            else:
                await respond(req, 405, b"405 method not allowed", TEXT_TYPE, [(b"allow", allow)])
            return
        await self._run(req, route)

    async def _not_found(self, req: Request, dialect: str) -> None:
        if dialect != "ollama":
            e = GatewayError(ErrorKind.NOT_FOUND, f"Unknown request URL: {req.method} {req.path}")
            await respond(req, 404, error_body(dialect, e), JSON_TYPE)
        else:
            # gin's wording: what clients with a wrong base URL have learned to recognise.
            await respond(req, 404, b"404 page not found", TEXT_TYPE)

    async def _run(self, req: Request, route: Route) -> None:
        task = asyncio.current_task()
        assert task is not None
        ctx = RequestContext(route.dialect, route.name, method=req.method, path=req.path)
        ctx.request_id = request_id(req.header(b"x-request-id"))
        req.extra_headers.append((b"x-request-id", ctx.request_id.encode()))
        if self.tracing:
            ctx.trace_id, ctx.parent_span_id = parse_traceparent(req.header(b"traceparent"))
        if self.capture:
            ctx.capture = True
            ctx.output = []
        watch = req.watch(task)
        try:
            gate = self.gateway.gate
            if route.admin or (route.dialect == "admin" and not route.public):
                self.check_admin(gate, req, ctx, route)
            elif gate is not None and not route.public:
                self._authenticate(gate, req, ctx)
            if route.body:
                await req.read_body(self.max_body)
            watch.arm()
            await route.handler(self.gateway, req, ctx)
        except GatewayError as e:
            ctx.error = e.kind.name
            await self._error(req, route.dialect, e)
        except ClientGone:
            ctx.error = "CLIENT_CLOSED"
            log.info("%s %s: the client went away before sending its body", req.method, req.path)
        except asyncio.CancelledError:
            if not watch.fired:
                raise  # not ours: the server is shutting down
            task.uncancel()
            ctx.error = "CLIENT_CLOSED"
            log.info("%s %s: the client went away; request cancelled", req.method, req.path)
        except Exception:
            log.exception("%s %s failed", req.method, req.path)
            ctx.error = "INTERNAL"
            err = GatewayError(ErrorKind.INTERNAL, "internal error")
            await self._error(req, route.dialect, err)
        finally:
            req.finished = True
            watch.disarm()
            ctx.status = 499 if ctx.error == "CLIENT_CLOSED" else req.status
            self.gateway.finish(ctx)

    def check_admin(
        self, gate: Gate | None, req: Request, ctx: RequestContext, route: Route | None = None
    ) -> None:
        """Whether this caller may manage the gateway: the admin API (/admin/api/*) and
        model management (/api/pull, /api/delete, /api/copy). The one place that decides.

        With keys (always under `aistack serve`): the master key, forward-auth headers
        from a trusted proxy, or a signed-in console session (whose changes carry its
        CSRF token); virtual keys never manage. Read-only users (`auth.viewer_groups`)
        may only read (GET), and call routes marked `viewer`. A gateway built without
        a gate (embedded, tests) lets only callers on its own machine (loopback) in.
        """
        peer = req.client[0] if req.client else None
        if gate is None:
            try:
                local = ipaddress.ip_address((peer or "").split("%", 1)[0]).is_loopback
            except ValueError:
                local = peer == "localhost"
            if not local:
                raise GatewayError(
                    ErrorKind.FORBIDDEN,
                    "managing the gateway is for admins: without keys, only callers on "
                    "its own machine may",
                )
            ctx.app = "admin:local"
            return
        admin = gate.admin(presented_key(req), peer, req.header)
        if admin is None and self.console is not None:
            admin = self.console.session_admin(req)
        if admin is None:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED,
                "this needs an admin: the master key (Authorization: Bearer), "
                "forward-auth headers from a trusted proxy, or a console session",
            )
        safe = req.method in ("GET", "HEAD")
        if admin.read_only and not safe and not (route is not None and route.viewer):
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                f"'{admin.name}' has read-only access: changes need an admin "
                "(auth.admin_groups or the master key)",
            )
        if admin.via == "forward auth" and not safe and cross_site(req):
            # The identity provider's cookie rides along with any request to the proxy.
            raise GatewayError(ErrorKind.FORBIDDEN, "a change from another site refused")
        ctx.app = f"admin:{admin.name}"

    @staticmethod
    def _authenticate(gate: Gate, req: Request, ctx: RequestContext) -> None:
        token = presented_key(req)
        proxied = gate.open and (
            req.header(b"x-forwarded-for") is not None or req.header(b"forwarded") is not None
        )
        gate.authenticate(ctx, token, proxied)
        ctx.end_user = end_user(req)

    async def _error(self, req: Request, dialect: str, e: GatewayError) -> None:
        if req.responded:
            return  # the stream already rendered it
        headers: list[tuple[bytes, bytes]] = []
        if e.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(e.retry_after))).encode()))
        level = logging.WARNING if e.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", req.method, req.path, e.status, e.message)
        await respond(req, e.status, error_body(dialect, e), JSON_TYPE, headers)
