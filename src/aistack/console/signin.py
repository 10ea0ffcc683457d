"""Signing in to the console: the form, one-time links, forward auth.

A session lives in the store (access/sessions.py) and the admin API accepts it like the
master key (http/auth.py). Who may sign in:

- whoever has the admin credential: the master key, or the admin key `aistack serve`
  made in the data directory, typed into the form once;
- whoever holds a one-time sign-in link (`aistack serve` prints one at start, `aistack
  admin link` prints a fresh one for anyone who can read the credential);
- users a trusted proxy vouches for with forward-auth headers (signed in as they open
  any page).

No one else, and nobody without a credential: there is no "local admin". Failed
attempts are throttled per address (the gate's FAILURES); every redirect goes to one of
our own pages, and a `next` with a control character in it goes nowhere but /ui.
"""

from __future__ import annotations

import html
import logging
import re
from string import Template
from urllib.parse import parse_qs

from aistack.access.credential import check_link
from aistack.access.gate import Admin, Gate
from aistack.access.sessions import Session, Sessions, clear_cookie, set_cookie
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import Request, query_of, respond
from aistack.http.auth import client_of, cross_site, session_of
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

# A path of ours: /ui, or under it; printable ASCII only (no CR/LF to split a header
# with, no spaces, no backslashes some browsers read as slashes).
_OURS = re.compile(r"^/ui(?:[/?#][!-~]*)?$")


def safe_next(nxt: str | None) -> str:
    """Where to go after signing in: one of our own pages, never another site, never a
    header's worth of control characters."""
    if nxt and _OURS.match(nxt) and "\\" not in nxt and not nxt.startswith("//"):
        return nxt
    return PREFIX


async def redirect(
    req: Request, location: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A 303 to one of our pages (the one way the console redirects)."""
    if not _OURS.match(location) and location != "/outpost.goauthentik.io/sign_out":
        location = PREFIX  # never reached with our own callers; a guard for the header
    await respond(req, 303, b"", HTML_TYPE, [(b"location", location.encode()), *(headers or [])])


class SignIn:
    """The sign-in and sign-out forms, links, and who a page's visitor is."""

    def __init__(
        self, gw: Gateway, sessions: Sessions | None, login: Template, version: str
    ) -> None:
        self.gw = gw
        self.sessions = sessions
        self._login = login
        self.version = version
        pub = gw.config.server.public_url or ""
        self._https = pub.startswith("https://")

    async def session_of(self, req: Request) -> Session | None:
        return await session_of(self.gw.gate, self.sessions, req)

    def forwarded(self, req: Request) -> Admin | None:
        gate = self.gw.gate
        if gate is None:
            return None
        return gate.forwarded(req.client[0] if req.client else None, req.header)

    def secure(self, req: Request) -> bool:
        """Cookies get Secure when the console is reached over https: the public URL
        says so, or the connection is TLS, or a trusted proxy says it terminated TLS."""
        if self._https or req.scheme == "https":
            return True
        gate = self.gw.gate
        peer = req.client[0] if req.client else ""
        return (
            req.header(b"x-forwarded-proto") == b"https"
            and gate is not None
            and bool(peer)
            and gate.trusts(peer)
        )

    async def start(
        self,
        req: Request,
        name: str,
        role: str,
        via: str,
        *,
        groups: tuple[str, ...] = (),
        credential: str = "",
    ) -> tuple[Session, bytes]:
        assert self.sessions is not None
        token, s = await self.sessions.issue(name, role, via, groups=groups, credential=credential)
        log.info("console: %s signed in (%s, %s)", name, via, role)
        return s, set_cookie(token, self.sessions.ttl, self.secure(req))

    def _login_html(self, error: str = "", nxt: str = "", status_note: str = "") -> bytes:
        gate = self.gw.gate
        hints = [
            "No key at hand? On the gateway's machine, <code>aistack admin link</code> "
            "prints a one-time sign-in link."
        ]
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
            next=html.escape(safe_next(nxt)),
            master_disabled="" if gate is not None and gate.credentials else " disabled",
            hints="".join(f"<p>{h}</p>" for h in hints),
        ).encode()

    async def _page(self, req: Request, status: int, error: str = "", nxt: str = "",
                    note: str = "") -> None:  # fmt: skip
        page = self._login_html(error, nxt, note)
        await respond(req, status, page, HTML_TYPE, SECURITY_HEADERS)

    async def login_page(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        q = query_of(req)
        nxt = safe_next(q.get("next"))
        link = q.get("link")
        if link is not None:
            await self._redeem(req, link, nxt)
            return
        if await self.session_of(req) is not None or self.forwarded(req) is not None:
            await redirect(req, nxt)
            return
        note = "You are signed out." if q.get("bye") else ""
        await self._page(req, 200, nxt=nxt, note=note)

    def _throttled(self, gate: Gate, req: Request) -> str:
        client = client_of(gate, req)
        refused = gate.throttled(client)
        if refused is not None:
            raise refused
        return client

    async def _redeem(self, req: Request, token: str, nxt: str) -> None:
        """A one-time sign-in link: a session, once; a used or stale link, a fresh hint."""
        gate = self.gw.gate
        if gate is None or self.sessions is None:
            raise GatewayError(ErrorKind.NOT_FOUND, "sign-in links need the gate")
        client = self._throttled(gate, req)
        found, why = check_link(token, gate.credentials)
        if found is not None and not await gate.store.run(
            gate.store.use_link, found.nonce, found.expires * 1000
        ):
            found, why = None, "this sign-in link was used already"
        if found is None:
            gate.failed(client)
            log.info("console: a sign-in link was refused: %s", why)
            msg = f"{why[0].upper()}{why[1:]}: `aistack admin link` prints a fresh one."
            await self._page(req, 401, msg, nxt)
            return
        _, cookie = await self.start(
            req, "admin", "admin", "sign-in link", credential=found.credential.fingerprint
        )
        await redirect(req, nxt, [(b"set-cookie", cookie), *SECURITY_HEADERS[2:3]])

    async def login(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        nxt = safe_next(form.get("next"))
        if cross_site(req):
            raise GatewayError(ErrorKind.FORBIDDEN, "sign-in from another site refused")
        gate = self.gw.gate
        if gate is None or self.sessions is None:
            await self._page(req, 401, "This gateway has no admin credential.", nxt)
            return
        client = self._throttled(gate, req)
        key = form.get("key", "").strip()
        who, cred = gate.admin_by_key(key), gate.credential_of(key)
        if who is None or cred is None:
            gate.failed(client)
            log.info("console: a sign-in failed")
            await self._page(req, 401, "That is not the master key or the admin key.", nxt)
            return
        _, cookie = await self.start(req, who.name, "admin", who.via, credential=cred.fingerprint)
        await redirect(req, nxt, [(b"set-cookie", cookie)])

    async def logout(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        s = await self.session_of(req)
        if s is not None and self.sessions is not None:
            if cross_site(req) or not Sessions.check_csrf(s, form.get("csrf")):
                raise GatewayError(ErrorKind.FORBIDDEN, "sign-out needs the console's form")
            await self.sessions.revoke(s)
            log.info("console: %s signed out", s.name)
        where = f"{PREFIX}/login?bye=1"
        if self.forwarded(req) is not None:
            # The proxy would sign them straight back in: end the provider's session.
            where = "/outpost.goauthentik.io/sign_out"
        await redirect(req, where, [(b"set-cookie", clear_cookie(self.secure(req)))])
