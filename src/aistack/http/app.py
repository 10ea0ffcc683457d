"""The application: each request finds its entry in the route table (table.py), is let in
by the entry's `access` (auth.py), and runs its handler with a context that carries the
entry's name, dialect and operation.

Every error on a route (a bad body, an unknown model, a backend down) is rendered in
its dialect with the right status. A caller's mistake is never a 500; an unexpected
failure is a 500 with no traceback in the body.

A caller that disconnects cancels the request task, which closes the upstream
connection, so the backend stops generating.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import Iterable

from aistack.access.sessions import Sessions
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import (
    CUT,
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
    was_cut,
)
from aistack.http.auth import authenticate, check_admin
from aistack.http.errors import error_body, not_allowed, not_found
from aistack.http.routes import table as default_table
from aistack.http.table import KEY, PUBLIC, Dialect, Entry, Route, RouteTable
from aistack.observability import Observability
from aistack.observability.tracing import parse_traceparent
from aistack.service import Gateway, RequestContext
from aistack.store import StoreError

log = logging.getLogger("aistack.http")


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


_RID_PREFIX = os.urandom(4).hex()
_rids = itertools.count(1)
_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(given: bytes | None) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    if given is not None and _RID_OK.match(given):
        return given.decode()
    return f"{_RID_PREFIX}{next(_rids):08x}"


class App:
    """The gateway over HTTP: a route table (routes.py, and the rooms' entries) and
    what every request gets from its entry (auth, the context, errors in its dialect).

    `routes`: the table; by default the gateway's own (`routes.table(obs)`), without the
    rooms (aistack/rooms.py builds the whole house). `sessions`: the console's
    sessions (the gate's, when the console is on), accepted as an admin (and, on KEY
    routes, as the console user).
    """

    def __init__(
        self,
        gateway: Gateway,
        obs: Observability | None = None,
        routes: Iterable[Entry] | None = None,
        *,
        sessions: Sessions | None = None,
    ) -> None:
        self.gateway = gateway
        self.obs = obs
        self.table = RouteTable(routes if routes is not None else default_table(obs))
        self.sessions = sessions
        self._watches = Watches()
        self.tracing = obs is not None and obs.tracer is not None
        self.capture = obs is not None and obs.capture
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
        methods, path, params = self.table.find(req.path)
        req.path = path
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
        if methods is None:
            await not_found(req, self.table.dialect_of(path))
            return
        route = methods.get(req.method)
        if route is None:
            dialect = next(iter(methods.values())).dialect
            await not_allowed(req, dialect, ", ".join(methods).encode())
            return
        if params:
            req.params = params
        await self._run(req, route)

    async def _run(self, req: Request, route: Route) -> None:
        task = asyncio.current_task()
        assert task is not None
        ctx = RequestContext(
            route.dialect, route.name, route.operation, method=req.method, path=req.path
        )
        ctx.request_id = request_id(req.header(b"x-request-id"))
        req.extra_headers.append((b"x-request-id", ctx.request_id.encode()))
        if self.tracing:
            ctx.trace_id, ctx.parent_span_id = parse_traceparent(req.header(b"traceparent"))
        if self.capture:
            ctx.capture = True
            ctx.output = []
        watch = req.watch(task)
        try:
            access = route.access
            if access is not PUBLIC:
                check = authenticate if access is KEY else check_admin
                pending = check(self.gateway.gate, self.sessions, req, ctx, route)
                if pending is not None:
                    await pending
                if access is KEY:
                    # A conversation the client names, for sticky models (docs/routing.md).
                    s = req.header(b"x-aistack-session") or req.header(b"x-claude-code-session-id")
                    if s:
                        ctx.session = s.decode("latin-1")[:200]
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
            if was_cut(req):
                # The shutdown grace ran out: a 503 in the dialect if nothing was sent
                # yet (a stream's route ends its stream itself, see answers.py).
                ctx.error = CUT.kind.name
                log.warning("%s %s: cut by the server's shutdown", req.method, req.path)
                await self._error(req, route.dialect, CUT)
            elif not watch.fired:
                raise  # not ours: the server is shutting down
            else:
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
            if ctx.error == "CLIENT_CLOSED":
                ctx.status = 499
            elif ctx.error == "SERVER_CUT":
                ctx.status = 503  # whatever status went out before the stream was cut
            else:
                ctx.status = req.status
            self.gateway.finish(ctx)

    def raw_error(self, path: str, e: GatewayError) -> bytes:
        """`e` as the body of an answer the HTTP server makes itself (a 400, 408, 413,
        431, 503: before any route runs), in the dialect of the route at `path`."""
        return error_body(self.table.dialect_at(path), e)

    async def _error(self, req: Request, dialect: Dialect, e: GatewayError) -> None:
        if req.responded:
            return  # the stream already rendered it
        headers: list[tuple[bytes, bytes]] = []
        if e.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(e.retry_after))).encode()))
        level = logging.WARNING if e.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", req.method, req.path, e.status, e.message)
        await respond(req, e.status, error_body(dialect, e), JSON_TYPE, headers)
