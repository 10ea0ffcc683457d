"""The web console at /ui: pages, sign-in, and the admin API endpoints only it needs.

Server-rendered page shells (templates/) with one small script and one stylesheet
(static/), no build step and nothing fetched from elsewhere: each page asks the admin
API (/admin/api/*) for its data with the session cookie, as any script could with the
master key. See docs/console.md.

Who may use it is decided with the admin API's rule (`App.check_admin`): the master key
(typed into the sign-in form once, then a signed session cookie), forward-auth headers
from a trusted proxy, or, while the gateway has no master key and is open, a caller on
the gateway's own machine. Read-only users (`auth.viewer_groups`) see every page; the
server refuses them every change.

Nothing here is on the API's request path: the routes are entries in the route table,
and the only per-request work is an observer that keeps captured prompts and answers,
registered only when `tracing.capture_content` is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote

from aistack.access.gate import Admin
from aistack.console.content import ContentLog
from aistack.console.sessions import (
    CSRF_HEADER,
    Session,
    Sessions,
    clear_cookie,
    cookie_value,
    secret_for,
    set_cookie,
)
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.models import LoadedModel
from aistack.doctor import snippets
from aistack.http.asgi import Request, respond, respond_json
from aistack.routing.health import report
from aistack.service import Gateway, RequestContext
from aistack.store.base import day_of, day_start_ms, now_ms

log = logging.getLogger("aistack.console")

Handler = Callable[[Gateway, Request, RequestContext], Awaitable[None]]
SAFE_METHODS = frozenset({"GET", "HEAD"})
HTML_TYPE = b"text/html; charset=utf-8"
PREFIX = "/ui"
KEY_PLACEHOLDER = "YOUR_AISTACK_KEY"

# (path, title, what the page is for): the navigation, in order.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("overview", "Overview", "backends, deployments and traffic, live"),
    ("models", "Models", "the fleet: pull, delete, sync"),
    ("playground", "Playground", "chat with any model"),
    ("keys", "Keys", "per-app keys and their limits"),
    ("usage", "Usage", "requests, tokens and spend over time"),
    ("requests", "Requests", "the request log"),
    ("connect", "Connect an app", "settings for each app"),
)

# Pages: served as they are (the browser loads them without our session header).
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A console route for the app's table (http/app.py builds its `Route` from it)."""

    handler: Handler
    dialect: str
    body: bool = False
    public: bool = False  # the handler decides itself (pages: redirect to sign-in)
    admin: bool = False
    viewer: bool = False  # read-only users may call it although it is a POST


def cross_site(req: Request) -> bool:
    """The browser says this request comes from another site (Sec-Fetch-Site)."""
    site = req.header(b"sec-fetch-site")
    return site is not None and site not in (b"same-origin", b"none")


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return addr == "localhost"


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


def _query(req: Request) -> dict[str, str]:
    qs = req.query.decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(qs).items()}


def _read(name: str) -> bytes:
    return resources.files("aistack.console").joinpath(name).read_bytes()


class Console:
    """The console's state: the session signer, captured content, static files."""

    def __init__(self, gw: Gateway, capture: bool = False) -> None:
        cfg = gw.config
        self.gw = gw
        secret = secret_for(cfg.console.session_secret, cfg.auth.master_key)
        self.sessions = Sessions(secret, cfg.console.session_hours * 3600)
        self.contents: ContentLog | None = None
        if capture:
            self.contents = ContentLog()
            gw.observers.append(self.contents.observe)
        self.static: dict[str, tuple[bytes, bytes, str]] = {}
        for name, ctype in (("console.js", b"text/javascript; charset=utf-8"),
                            ("console.css", b"text/css; charset=utf-8")):  # fmt: skip
            data = _read(f"static/{name}")
            self.static[name] = (data, ctype, hashlib.sha256(data).hexdigest()[:12])
        self.version = hashlib.sha256(
            b"".join(v[2].encode() for v in self.static.values())
        ).hexdigest()[:12]
        self._shell = Template(_read("templates/shell.html").decode())
        self._login = Template(_read("templates/login.html").decode())
        self._ps: tuple[float, dict[str, Any]] | None = None
        self._ps_lock = asyncio.Lock()

    # -- the route table

    def routes(self) -> dict[str, dict[str, RouteSpec]]:
        page = RouteSpec(self.page, "admin", public=True)
        out: dict[str, dict[str, RouteSpec]] = {
            PREFIX: {"GET": page, "HEAD": page},
            f"{PREFIX}/login": {
                "GET": RouteSpec(self.login_page, "admin", public=True),
                "POST": RouteSpec(self.login, "admin", body=True, public=True),
            },
            f"{PREFIX}/logout": {"POST": RouteSpec(self.logout, "admin", body=True, public=True)},
            # The playground: OpenAI's chat completions, recorded as app "console".
            f"{PREFIX}/api/chat": {
                "POST": RouteSpec(
                    self.chat_completions, "openai", body=True, admin=True, viewer=True
                )
            },
        }
        for name, _, _ in PAGES:
            out[f"{PREFIX}/{name}"] = {"GET": page, "HEAD": page}
        for name in self.static:
            r = RouteSpec(self.static_file, "admin", public=True)
            out[f"{PREFIX}/static/{name}"] = {"GET": r, "HEAD": r}

        def get(h: Handler) -> dict[str, RouteSpec]:
            r = RouteSpec(h, "admin")
            return {"GET": r, "HEAD": r}

        out["/admin/api/me"] = get(self.me)
        out["/admin/api/overview"] = get(self.overview)
        out["/admin/api/latency"] = get(self.latency)
        out["/admin/api/snippets"] = get(self.snippets)
        out["/admin/api/content"] = get(self.content)
        return out

    # -- who is asking

    def session_of(self, req: Request) -> Session | None:
        return self.sessions.verify(cookie_value(req.header(b"cookie")))

    def session_admin(self, req: Request) -> Admin | None:
        """The admin API's hook: the signed-in console user, if the cookie says so.
        A change (POST, DELETE) also needs the session's CSRF token in its header."""
        s = self.session_of(req)
        if s is None:
            return None
        if req.method not in SAFE_METHODS and (
            cross_site(req) or not self.sessions.check_csrf(s, req.header(CSRF_HEADER))
        ):
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                "this change needs the console's CSRF token (X-Aistack-CSRF): reload the page",
            )
        return Admin(s.name, "session", s.role)

    def _local_allowed(self, req: Request) -> bool:
        """No master key, an open gateway, and a caller on this machine that reached it
        by a loopback name (not through a proxy, not by DNS rebinding)."""
        gate = self.gw.gate
        if gate is not None and (gate.has_master or not gate.open):
            return False
        client = req.client
        if not client or not _loopback(str(client[0])):
            return False
        if req.header(b"x-forwarded-for") or req.header(b"forwarded"):
            return False
        host = (req.header(b"host") or b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("[") and "]" in host:
            name = host[1 : host.index("]")]
        return _loopback(name)

    def _forwarded(self, req: Request) -> Admin | None:
        gate = self.gw.gate
        if gate is None:
            return None
        client = req.client
        who = gate.admin(None, client[0] if client else None, req.header)
        return who if who is not None and who.via == "forward auth" else None

    def _secure(self, req: Request) -> bool:
        if req.scheme == "https":
            return True
        fwd = req.header(b"x-forwarded-proto")
        return fwd == b"https" and self._forwarded(req) is not None

    def _start(self, req: Request, name: str, role: str, via: str) -> tuple[Session, bytes]:
        token, s = self.sessions.issue(name, role, via)
        log.info("console: %s signed in (%s, %s)", name, via, role)
        return s, set_cookie(token, self.sessions.ttl, self._secure(req))

    # -- pages

    def _nav(self, current: str) -> str:
        items = []
        for name, title, _ in PAGES:
            here = ' aria-current="page"' if name == current else ""
            items.append(f'<li><a href="{PREFIX}/{name}"{here}>{html.escape(title)}</a></li>')
        return "<ul>" + "".join(items) + "</ul>"

    async def page(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        name = req.path[len(PREFIX) + 1 :] or "overview"
        title = next((t for n, t, _ in PAGES if n == name), "Overview")
        cookie: bytes | None = None
        fwd = self._forwarded(req)
        s = self.session_of(req)
        if fwd is not None and (s is None or (s.name, s.role) != (fwd.name, fwd.role)):
            s, cookie = self._start(req, fwd.name, fwd.role, "forward auth")
        if s is None:
            target = f"{PREFIX}/login?next={quote(req.path)}"
            await respond(req, 303, b"", HTML_TYPE, [(b"location", target.encode())])
            return
        ctx.app = f"admin:{s.name}"
        body = self._shell.substitute(
            title=html.escape(title),
            page=name,
            v=self.version,
            csrf=s.csrf,
            user=html.escape(s.name),
            role=s.role,
            role_label="admin" if s.role == "admin" else "read-only",
            via=html.escape(s.via),
            nav=self._nav(name),
        ).encode()
        headers = list(_SECURITY_HEADERS)
        if cookie is not None:
            headers.append((b"set-cookie", cookie))
        await respond(req, 200, body, HTML_TYPE, headers)

    def _login_html(self, error: str = "", nxt: str = "", status_note: str = "") -> bytes:
        gate = self.gw.gate
        master = gate is not None and gate.has_master
        open_local = gate is None or (not master and gate.open)
        hints = []
        if not master:
            hints.append(
                "This gateway has no master key. Set <code>auth.master_key</code> "
                "(from the environment) to sign in with it from anywhere."
            )
        if gate is not None and gate.proxies:
            hints.append(
                "Signed in to your identity provider? Open the console through the proxy "
                "and you are signed in by it."
            )
        return self._login.substitute(
            v=self.version,
            error=(f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""),
            note=(
                f'<p class="note" role="status">{html.escape(status_note)}</p>'
                if status_note
                else ""
            ),
            next=html.escape(nxt or PREFIX),
            master_disabled="" if master else " disabled",
            local_form=(
                ""
                if not open_local
                else '<form method="post" action="/ui/login" class="card">'
                "<h2>On this machine</h2><p>This gateway is open to local callers "
                "(no master key, no keys yet).</p>"
                '<input type="hidden" name="mode" value="local">'
                f'<input type="hidden" name="next" value="{html.escape(nxt or PREFIX)}">'
                '<button type="submit">Continue as local admin</button></form>'
            ),
            hints="".join(f"<p>{h}</p>" for h in hints),
        ).encode()

    async def login_page(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        q = _query(req)
        nxt = q.get("next", PREFIX)
        if self.session_of(req) is not None or self._forwarded(req) is not None:
            await respond(req, 303, b"", HTML_TYPE, [(b"location", _safe_next(nxt).encode())])
            return
        note = "You are signed out." if q.get("bye") else ""
        await respond(
            req, 200, self._login_html(nxt=nxt, status_note=note), HTML_TYPE, _SECURITY_HEADERS
        )

    async def login(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        nxt = _safe_next(form.get("next", PREFIX))
        if cross_site(req):
            raise GatewayError(ErrorKind.FORBIDDEN, "sign-in from another site refused")
        gate = self.gw.gate
        cookie: bytes | None = None
        if form.get("mode") == "local":
            if self._local_allowed(req):
                _, cookie = self._start(req, "local", "admin", "local")
        else:
            key = form.get("key", "").strip()
            who = gate.admin(key, None, req.header) if gate is not None and key else None
            if who is not None and who.via == "master key":
                _, cookie = self._start(req, "master", "admin", "master key")
        if cookie is None:
            log.info("console: a sign-in failed")
            page = self._login_html("That is not the master key.", nxt)
            await respond(req, 401, page, HTML_TYPE, _SECURITY_HEADERS)
            return
        headers = [(b"location", nxt.encode()), (b"set-cookie", cookie)]
        await respond(req, 303, b"", HTML_TYPE, headers)

    async def logout(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        s = self.session_of(req)
        if s is not None:
            if cross_site(req) or not self.sessions.check_csrf(s, form.get("csrf")):
                raise GatewayError(ErrorKind.FORBIDDEN, "sign-out needs the console's form")
            self.sessions.revoke(s)
            log.info("console: %s signed out", s.name)
        where = f"{PREFIX}/login?bye=1"
        if self._forwarded(req) is not None:
            # The proxy would sign them straight back in: end the provider's session.
            where = "/outpost.goauthentik.io/sign_out"
        headers = [(b"location", where.encode()), (b"set-cookie", clear_cookie(self._secure(req)))]
        await respond(req, 303, b"", HTML_TYPE, headers)

    async def static_file(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        data, ctype, digest = self.static[req.path.rsplit("/", 1)[-1]]
        versioned = _query(req).get("v") == self.version
        cache = b"public, max-age=31536000, immutable" if versioned else b"no-cache"
        headers = [(b"cache-control", cache), (b"etag", f'"{digest}"'.encode()),
                   (b"x-content-type-options", b"nosniff")]  # fmt: skip
        if req.header(b"if-none-match") == f'"{digest}"'.encode():
            await respond(req, 304, b"", ctype, headers)
            return
        await respond(req, 200, data, ctype, headers)

    # -- the playground's model calls

    async def chat_completions(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """OpenAI's chat completions for the signed-in user, in the ledger as `console`."""
        from aistack.http.openai_routes import chat_completions

        user = ctx.app.removeprefix("admin:")
        ctx.app, ctx.key_id, ctx.end_user = "console", "console", user[:200]
        await chat_completions(gw, req, ctx)

    # -- admin API endpoints for the console

    def _identity(self, req: Request) -> Admin:
        gate = self.gw.gate
        client = req.client
        peer = client[0] if client else None
        if gate is not None:
            from aistack.http.app import presented_key

            who = gate.admin(presented_key(req), peer, req.header)
            if who is not None:
                return who
        who = self.session_admin(req)
        return who if who is not None else Admin("local", "local")

    async def me(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        who = self._identity(req)
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
                        return name, await gw.backends[name].ps()
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
                "models": models,
                "today": total,
                "window_s": 300,
                "requests_5m": sum(v.get("requests", 0) for v in recent.values()),
                "errors_5m": sum(v.get("errors", 0) for v in recent.values()),
            },
        )

    async def latency(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """Percentiles of duration and time to first token, per model and per day."""
        from aistack.access.keys import SpecError, parse_since

        gate = gw.gate
        if gate is None or not gate.ledger_enabled:
            raise GatewayError(ErrorKind.NOT_FOUND, "the usage ledger is off")
        q = _query(req)
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
        q = _query(req)
        app = q.get("app", "openai")
        via = q.get("via") or None
        if via not in (None, "ollama", "openai"):
            raise invalid("via: ollama or openai", param="via")
        listed = [m.name for m in await gw.listed()]
        model = q.get("model") or (listed[0] if listed else "MODEL")
        base = gw.config.server.public_url
        if not base:
            host = (req.header(b"host") or b"127.0.0.1").decode("latin-1")
            base = f"{req.scheme}://{host}"
        gate = gw.gate
        key = KEY_PLACEHOLDER if gate is not None and not gate.open else None
        try:
            s = snippets.build(app, base=base, model=model, key=key, via=via)  # type: ignore[arg-type]
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
        rid = _query(req).get("request_id", "")
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


def _safe_next(nxt: str) -> str:
    """Only our own pages: never an open redirect."""
    if nxt.startswith(PREFIX) and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return PREFIX


__all__ = ["PAGES", "Console", "RouteSpec", "cross_site"]
