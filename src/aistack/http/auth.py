"""Who is calling, decided once per request from the route's declared `access` and `scope`.

- KEY (the model APIs): the presented key, checked by the gate in memory (a key it has
  not loaded is looked up in the store, once); with no key, a signed-in console
  session (the playground is an ordinary chat call made as the console user), else
  the gate's open mode decides. A route's `scope` (access/scopes.py) must be held by
  the key (`--scope models`), or by the session's role; the master key, the admin key
  and an open gateway's local caller hold every scope.
- ADMIN and VIEWER (the admin API): the master key or the admin key, forward-auth
  headers from a trusted proxy, or a console session; virtual keys never manage.
  Read-only users may only read (GET), and call VIEWER routes.
- Every state change a browser can make (a console session, forward auth, whose
  identity rides along with any request) needs the session's CSRF token.
- Open mode is for local callers: a loopback peer, a Host header naming a loopback
  address (a page that rebinds its own name to 127.0.0.1 sends its own name), and no
  proxy header; `auth.open: true` serves anyone.
- A gateway built without a gate (embedded, tests) is open to loopback callers and
  has no admin: no admin without a credential.

The request path's whole cost is in `authenticate`'s first lines (a known key); every
other case returns a coroutine for the app to await.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Coroutine
from typing import Any

from aistack.access.gate import ADMIN_KEY, MASTER, Admin, Gate, KeyInfo
from aistack.access.scopes import SCOPES
from aistack.access.sessions import CSRF_HEADER, Session, Sessions, Unknown, cookie_value
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import Request
from aistack.http.table import VIEWER, Route
from aistack.service import RequestContext

SAFE_METHODS = frozenset({"GET", "HEAD"})
# Headers a reverse proxy adds: a request that carries one did not come from this machine.
PROXY_HEADERS = (
    b"x-forwarded-for", b"forwarded", b"x-forwarded-host", b"x-forwarded-proto",
    b"x-real-ip", b"via",
)  # fmt: skip

Pending = Coroutine[Any, Any, None]


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


def loopback(addr: str | None) -> bool:
    """An address on this machine, or a name that can only mean it (localhost, and
    *.localhost, which browsers resolve to loopback themselves)."""
    a = (addr or "").strip().rstrip(".").lower()
    if a == "localhost" or a.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(a.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_name(req: Request) -> str:
    """The Host header without its port ('' when there is none)."""
    host = (req.header(b"host") or b"").decode("latin-1").strip()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def proxied(req: Request) -> bool:
    return any(req.header(h) is not None for h in PROXY_HEADERS)


def local_caller(req: Request) -> bool:
    """A process on this machine that asked for this machine by a loopback name (or, as
    an HTTP/1.0 client may, by none: a browser always names one), not through a proxy:
    what implicit open mode serves, and what DNS rebinding is not."""
    peer = req.client[0] if req.client else None
    if not loopback(peer) or proxied(req):
        return False
    host = host_name(req)
    return not host or loopback(host)


def client_of(gate: Gate, req: Request) -> str:
    """The caller's address for throttling: the TCP peer, or behind a trusted proxy the
    address it forwarded."""
    peer = req.client[0] if req.client else ""
    if gate.proxies and peer:
        fwd = req.header(b"x-forwarded-for")
        if fwd and gate.trusts(peer):
            return fwd.decode("latin-1").rsplit(",", 1)[-1].strip()[:64] or peer
    return peer


def _open_to(gate: Gate | None, req: Request) -> bool:
    if gate is None:
        return local_caller(req)
    if not gate.open:
        return False
    return gate.open_setting is True or local_caller(req)


def _refusal(gate: Gate | None, req: Request, why: str) -> GatewayError:
    if gate is not None and gate.open and gate.open_setting is None:
        # Open, but not to this caller.
        why = (
            "this gateway has no keys and serves local callers only (a loopback address, "
            "asked for by a loopback name, not through a proxy): create a key (aistack "
            "keys create), set auth.master_key, or set auth.open: true to serve it "
            "without keys"
        )
    return GatewayError(ErrorKind.UNAUTHORIZED, why, code="invalid_api_key")


def _scope_error(who: str, scope: str, read_only: bool = False) -> GatewayError:
    what = SCOPES[scope].what
    if read_only:
        return GatewayError(
            ErrorKind.FORBIDDEN,
            f"'{who}' has read-only access: {what} needs an admin "
            "(auth.admin_groups or the master key)",
        )
    return GatewayError(
        ErrorKind.FORBIDDEN,
        f"API key '{who}' may not {what}: it needs scope '{scope}' "
        f"(aistack keys create --scope {scope})",
        code="scope_missing",
    )


def _key_in(gate: Gate, ctx: RequestContext, route: Route, info: KeyInfo, req: Request) -> None:
    gate.accept(ctx, info)
    if route.scope and route.scope not in info.scopes:
        raise _scope_error(info.name, route.scope)
    ctx.end_user = end_user(req)


def authenticate(
    gate: Gate | None, sessions: Sessions | None, req: Request, ctx: RequestContext, route: Route
) -> Pending | None:
    """A KEY route's caller: its key, a console session, or open mode; else 401 (or 403
    for a scope it lacks). None when decided here; else a coroutine to await."""
    token = presented_key(req)
    if token is not None and gate is not None:
        d, info = gate.known(token)
        if info is not None and not (gate.throttling and info in _ADMINS):
            _key_in(gate, ctx, route, info, req)
            return None
        return _unknown_key(gate, req, ctx, route, d, info)
    return _without_key(gate, sessions, req, ctx, route)


_ADMINS = (MASTER, ADMIN_KEY)


async def _unknown_key(
    gate: Gate, req: Request, ctx: RequestContext, route: Route, d: bytes, info: KeyInfo | None
) -> None:
    """A key this process has not loaded (or an admin credential while some address is
    throttled): the throttle first, then the store."""
    client = client_of(gate, req)
    throttled = gate.throttled(client)
    if throttled is not None:
        raise throttled
    if info is None:
        info = await gate.lookup(d)
    if info is not None:
        _key_in(gate, ctx, route, info, req)
        return
    if _open_to(gate, req):
        # SDKs insist on a key and send placeholders ("ollama"): open ignores them.
        ctx.end_user = end_user(req)
        return
    if not gate.open:
        gate.failed(client)
    raise _refusal(gate, req, "invalid API key")


async def _without_key(
    gate: Gate | None, sessions: Sessions | None, req: Request, ctx: RequestContext, route: Route
) -> None:
    if sessions is not None and gate is not None and not cross_site(req):
        # Only the console's own pages: another site's page never acts as its user.
        who, s = await _session_admin(gate, sessions, req)
        if who is not None:
            if route.scope and who.read_only and not SCOPES[route.scope].default:
                raise _scope_error(who.name, route.scope, read_only=True)
            _needs_csrf(req, s)
            # Recorded in the ledger as app and key `console`, the user as end user.
            ctx.app, ctx.key_id, ctx.end_user = "console", "console", who.name[:200]
            return
    if _open_to(gate, req):
        ctx.end_user = end_user(req)
        return
    if gate is None:
        raise GatewayError(
            ErrorKind.FORBIDDEN,
            "this gateway has no keys and serves callers on its own machine only",
        )
    raise _refusal(gate, req, "missing API key: send it as 'Authorization: Bearer <key>'")


async def _session_of(sessions: Sessions, req: Request) -> Session | None:
    token = cookie_value(req.header(b"cookie"))
    if token is None:
        return None
    got = sessions.cached(token)
    return await sessions.get(token) if isinstance(got, Unknown) else got


def _needs_csrf(req: Request, s: Session | None) -> None:
    """A change made from a browser carries the console's CSRF token."""
    if req.method in SAFE_METHODS:
        return
    if s is None or cross_site(req) or not Sessions.check_csrf(s, req.header(CSRF_HEADER)):
        raise GatewayError(
            ErrorKind.FORBIDDEN,
            "this change needs the console's CSRF token (X-Aistack-CSRF): reload the page",
        )


async def _session_admin(
    gate: Gate, sessions: Sessions, req: Request
) -> tuple[Admin | None, Session | None]:
    """The signed-in console user, if the cookie stands for a session that the current
    rules still allow, and the session (whose CSRF token a change must carry)."""
    s = await _session_of(sessions, req)
    if s is None:
        return None, None
    peer = req.client[0] if req.client else None
    return gate.session_admin(s, gate.forwarded(peer, req.header)), s


async def session_of(gate: Gate | None, sessions: Sessions | None, req: Request) -> Session | None:
    """The console session behind this request that the current rules allow, if any."""
    if gate is None or sessions is None:
        return None
    s = await _session_of(sessions, req)
    if s is None:
        return None
    peer = req.client[0] if req.client else None
    return s if gate.session_admin(s, gate.forwarded(peer, req.header)) is not None else None


def check_admin(
    gate: Gate | None, sessions: Sessions | None, req: Request, ctx: RequestContext, route: Route
) -> Pending | None:
    """Whether this caller may manage the gateway (ADMIN and VIEWER routes): the one
    place that decides. Sets `ctx.admin` and `ctx.app` (`admin:NAME`). None when decided
    here (the master key or admin key); else a coroutine to await."""
    if gate is None:
        raise GatewayError(
            ErrorKind.FORBIDDEN,
            "this gateway has no admin credential: managing it needs one "
            "(auth.master_key, or the admin key aistack serve makes)",
        )
    token = presented_key(req)
    found = gate.admin_by_key(token) if not gate.throttling else None
    if found is not None:
        _admitted(ctx, found)
        return None
    return _check_admin(gate, sessions, req, ctx, route, token)


async def _check_admin(
    gate: Gate,
    sessions: Sessions | None,
    req: Request,
    ctx: RequestContext,
    route: Route,
    token: str | None,
) -> None:
    client = client_of(gate, req)
    if token is not None:
        throttled = gate.throttled(client)
        if throttled is not None:
            raise throttled
        by_key = gate.admin_by_key(token)
        if by_key is not None:
            _admitted(ctx, by_key)
            return
    peer = req.client[0] if req.client else None
    found = gate.forwarded(peer, req.header)
    s: Session | None = None
    if sessions is not None and (found is None or req.method not in SAFE_METHODS):
        by_session, s = await _session_admin(gate, sessions, req)
        found = found or by_session
    if found is None:
        if token is not None:
            gate.failed(client)
        raise GatewayError(
            ErrorKind.UNAUTHORIZED,
            "this needs an admin: the master key or admin key (Authorization: Bearer), "
            "forward-auth headers from a trusted proxy, or a console session",
        )
    safe = req.method in SAFE_METHODS
    if found.read_only and not safe and route.access is not VIEWER:
        raise GatewayError(
            ErrorKind.FORBIDDEN,
            f"'{found.name}' has read-only access: changes need an admin "
            "(auth.admin_groups or the master key)",
        )
    if not safe:
        # A browser's change: the console session's CSRF token, for the same user (the
        # identity provider's cookie rides along with any request to the proxy).
        if s is not None and s.name != found.name:
            s = None
        _needs_csrf(req, s)
    _admitted(ctx, found)


def _admitted(ctx: RequestContext, admin: Admin) -> None:
    ctx.admin = admin
    ctx.app = f"admin:{admin.name}"


async def entitled(gate: Gate | None, sessions: Sessions | None, req: Request, scope: str) -> bool:
    """Whether this caller holds `scope`, without refusing anyone (a public route that
    shows more to some: /health's details)."""
    if _open_to(gate, req):
        return True
    if gate is None:
        return False
    token = presented_key(req)
    if token is not None:
        d, info = gate.known(token)
        if info is None and gate.throttled(client_of(gate, req)) is None:
            info = await gate.lookup(d)
        return info is not None and info.usable() and scope in info.scopes
    peer = req.client[0] if req.client else None
    who = gate.forwarded(peer, req.header)
    if who is None and sessions is not None:
        s = await _session_of(sessions, req)
        who = gate.session_admin(s, None) if s is not None else None
    return who is not None and not who.read_only
