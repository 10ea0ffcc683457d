"""Who is calling, decided once per request from the route's declared `access`.

- KEY (the model APIs): the presented key, checked by the gate in memory; with no key,
  a signed-in console session (the playground is an ordinary chat call made as the
  console user), else the gate's open mode decides.
- ADMIN and VIEWER (the admin API, model management): the master key, forward-auth
  headers from a trusted proxy, or a console session (whose changes carry its CSRF
  token); virtual keys never manage. Read-only users may only read (GET), and call
  VIEWER routes. A gateway built without a gate (embedded, tests) lets only callers on
  its own machine (loopback) in.
"""

from __future__ import annotations

import ipaddress

from aistack.access.gate import Admin, Gate
from aistack.access.sessions import CSRF_HEADER, Session, Sessions, cookie_value
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import Request
from aistack.http.table import VIEWER, Route
from aistack.service import RequestContext

SAFE_METHODS = frozenset({"GET", "HEAD"})


def presented_key(req: Request) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` (OpenAI and Ollama clients), or
    `x-api-key: KEY` (Anthropic-style clients), or `api-key: KEY` (Qdrant clients). Other
    Authorization schemes are not ours."""
    auth = req.header(b"authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(b" ")
        value = value.strip()
        if scheme.lower() == b"bearer" and value:
            return value.decode("latin-1")
    # x-api-key: Anthropic-style clients; api-key: Qdrant's clients.
    key = req.header(b"x-api-key") or req.header(b"api-key")
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


def cross_site(req: Request) -> bool:
    """The browser says this request comes from another site (Sec-Fetch-Site)."""
    site = req.header(b"sec-fetch-site")
    return site is not None and site not in (b"same-origin", b"none")


def session_of(sessions: Sessions | None, req: Request) -> Session | None:
    """The signed-in console session the cookie stands for, if any."""
    if sessions is None:
        return None
    cookie = req.header(b"cookie")
    return sessions.verify(cookie_value(cookie)) if cookie is not None else None


def session_admin(sessions: Sessions | None, req: Request) -> Admin | None:
    """The signed-in console user, if the cookie says so. A change (POST, DELETE) also
    needs the session's CSRF token in its header."""
    s = session_of(sessions, req)
    if s is None or sessions is None:
        return None
    if req.method not in SAFE_METHODS and (
        cross_site(req) or not sessions.check_csrf(s, req.header(CSRF_HEADER))
    ):
        raise GatewayError(
            ErrorKind.FORBIDDEN,
            "this change needs the console's CSRF token (X-Aistack-CSRF): reload the page",
        )
    return Admin(s.name, "session", s.role)


def authenticate(
    gate: Gate | None, sessions: Sessions | None, req: Request, ctx: RequestContext
) -> None:
    """A KEY route's caller: its key, a console session, or open mode; else 401."""
    token = presented_key(req)
    if token is None and sessions is not None and not cross_site(req):
        # Only the console's own pages: another site's page never acts as its user.
        who = session_admin(sessions, req)
        if who is not None:
            # Recorded in the ledger as app and key `console`, the user as end user.
            ctx.app, ctx.key_id, ctx.end_user = "console", "console", who.name[:200]
            return
    if gate is None:
        return
    proxied = gate.open and (
        req.header(b"x-forwarded-for") is not None or req.header(b"forwarded") is not None
    )
    gate.authenticate(ctx, token, proxied)
    ctx.end_user = end_user(req)


def loopback(addr: str | None) -> bool:
    """An address (or host name) on this machine."""
    try:
        return ipaddress.ip_address((addr or "").strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return addr == "localhost"


def check_admin(
    gate: Gate | None, sessions: Sessions | None, req: Request, ctx: RequestContext, route: Route
) -> Admin:
    """Whether this caller may manage the gateway (ADMIN and VIEWER routes): the one
    place that decides. Sets `ctx.admin` and `ctx.app` (`admin:NAME`)."""
    peer = req.client[0] if req.client else None
    if gate is None:
        if not loopback(peer):
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                "managing the gateway is for admins: without keys, only callers on "
                "its own machine may",
            )
        admin = Admin("local", "local")
    else:
        found = gate.admin(presented_key(req), peer, req.header)
        if found is None:
            found = session_admin(sessions, req)
        if found is None:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED,
                "this needs an admin: the master key (Authorization: Bearer), "
                "forward-auth headers from a trusted proxy, or a console session",
            )
        admin = found
        safe = req.method in SAFE_METHODS
        if admin.read_only and not safe and route.access is not VIEWER:
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                f"'{admin.name}' has read-only access: changes need an admin "
                "(auth.admin_groups or the master key)",
            )
        if admin.via == "forward auth" and not safe and cross_site(req):
            # The identity provider's cookie rides along with any request to the proxy.
            raise GatewayError(ErrorKind.FORBIDDEN, "a change from another site refused")
    ctx.admin = admin
    ctx.app = f"admin:{admin.name}"
    return admin
