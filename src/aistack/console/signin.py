"""Signing in to the console: the form, the master key, forward auth, local callers.

A session is a signed cookie (access/sessions.py) that the admin API accepts like the
master key (http/auth.py). Who may sign in: whoever has the master key (typed into the
form once), users a trusted proxy vouches for with forward-auth headers (signed in as
they open any page), or, while the gateway has no master key and is open, a caller on
the gateway's own machine.
"""

from __future__ import annotations

import html
import logging
from string import Template
from urllib.parse import parse_qs

from aistack.access.gate import Admin
from aistack.access.sessions import Session, Sessions, clear_cookie, set_cookie
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import Request, query_of, respond
from aistack.http.auth import cross_site, loopback, session_of
from aistack.service import Gateway, RequestContext

log = logging.getLogger("aistack.console")

PREFIX = "/ui"
HTML_TYPE = b"text/html; charset=utf-8"

# Pages: served as they are (the browser loads them without our session header).
SECURITY_HEADERS = [
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


class SignIn:
    """The sign-in and sign-out forms, and who a page's visitor is."""

    def __init__(self, gw: Gateway, sessions: Sessions, login: Template, version: str) -> None:
        self.gw = gw
        self.sessions = sessions
        self._login = login
        self.version = version

    def session_of(self, req: Request) -> Session | None:
        return session_of(self.sessions, req)

    def local_allowed(self, req: Request) -> bool:
        """No master key, an open gateway, and a caller on this machine that reached it
        by a loopback name (not through a proxy, not by DNS rebinding)."""
        gate = self.gw.gate
        if gate is not None and (gate.has_master or not gate.open):
            return False
        client = req.client
        if not client or not loopback(str(client[0])):
            return False
        if req.header(b"x-forwarded-for") or req.header(b"forwarded"):
            return False
        host = (req.header(b"host") or b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("[") and "]" in host:
            name = host[1 : host.index("]")]
        return loopback(name)

    def forwarded(self, req: Request) -> Admin | None:
        gate = self.gw.gate
        if gate is None:
            return None
        client = req.client
        who = gate.admin(None, client[0] if client else None, req.header)
        return who if who is not None and who.via == "forward auth" else None

    def secure(self, req: Request) -> bool:
        if req.scheme == "https":
            return True
        fwd = req.header(b"x-forwarded-proto")
        return fwd == b"https" and self.forwarded(req) is not None

    def start(self, req: Request, name: str, role: str, via: str) -> tuple[Session, bytes]:
        token, s = self.sessions.issue(name, role, via)
        log.info("console: %s signed in (%s, %s)", name, via, role)
        return s, set_cookie(token, self.sessions.ttl, self.secure(req))

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
        q = query_of(req)
        nxt = q.get("next", PREFIX)
        if self.session_of(req) is not None or self.forwarded(req) is not None:
            await respond(req, 303, b"", HTML_TYPE, [(b"location", _safe_next(nxt).encode())])
            return
        note = "You are signed out." if q.get("bye") else ""
        await respond(
            req, 200, self._login_html(nxt=nxt, status_note=note), HTML_TYPE, SECURITY_HEADERS
        )

    async def login(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        nxt = _safe_next(form.get("next", PREFIX))
        if cross_site(req):
            raise GatewayError(ErrorKind.FORBIDDEN, "sign-in from another site refused")
        gate = self.gw.gate
        cookie: bytes | None = None
        if form.get("mode") == "local":
            if self.local_allowed(req):
                _, cookie = self.start(req, "local", "admin", "local")
        else:
            key = form.get("key", "").strip()
            who = gate.admin(key, None, req.header) if gate is not None and key else None
            if who is not None and who.via == "master key":
                _, cookie = self.start(req, "master", "admin", "master key")
        if cookie is None:
            log.info("console: a sign-in failed")
            page = self._login_html("That is not the master key.", nxt)
            await respond(req, 401, page, HTML_TYPE, SECURITY_HEADERS)
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
        if self.forwarded(req) is not None:
            # The proxy would sign them straight back in: end the provider's session.
            where = "/outpost.goauthentik.io/sign_out"
        headers = [(b"location", where.encode()), (b"set-cookie", clear_cookie(self.secure(req)))]
        await respond(req, 303, b"", HTML_TYPE, headers)


def _safe_next(nxt: str) -> str:
    """Only our own pages: never an open redirect."""
    if nxt.startswith(PREFIX) and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return PREFIX
