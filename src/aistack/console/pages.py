"""The console's pages: one page shell per navigation entry, and the static files.

Server-rendered shells (templates/shell.html) with one small script and one stylesheet
(static/), no build step and nothing fetched from elsewhere: each page asks the admin
API (/admin/api/*) for its data with the session cookie.
"""

from __future__ import annotations

import hashlib
import html
from importlib import resources
from string import Template
from urllib.parse import quote

from aistack.console.signin import HTML_TYPE, PREFIX, SECURITY_HEADERS, SignIn, redirect
from aistack.http.asgi import Request, query_of, respond
from aistack.service import Gateway, RequestContext

# (path, title, what the page is for): the navigation, in order.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("overview", "Overview", "backends, deployments and traffic, live"),
    ("models", "Models", "the fleet: pull, delete, sync"),
    ("playground", "Playground", "chat with any model"),
    ("images", "Images", "make images, the queue, the gallery"),
    ("keys", "Keys", "per-app keys and their limits"),
    ("usage", "Usage", "requests, tokens and spend over time"),
    ("requests", "Requests", "the request log"),
    ("vectors", "Vectors", "collections per app, sizes, search by text"),
    ("connect", "Connect an app", "settings for each app"),
)


Static = dict[str, tuple[bytes, bytes, str]]  # name -> (data, content type, digest)


def read(name: str) -> bytes:
    return resources.files("aistack.console").joinpath(name).read_bytes()


def load_static() -> tuple[Static, str]:
    """The static files, and their version (a digest of theirs) for cache busting."""
    static: Static = {}
    for name, ctype in (("console.js", b"text/javascript; charset=utf-8"),
                        ("console.css", b"text/css; charset=utf-8")):  # fmt: skip
        data = read(f"static/{name}")
        static[name] = (data, ctype, hashlib.sha256(data).hexdigest()[:12])
    version = hashlib.sha256(b"".join(v[2].encode() for v in static.values())).hexdigest()
    return static, version[:12]


class Pages:
    """The page shells and the static files."""

    def __init__(self, signin: SignIn, shell: Template, static: Static, version: str) -> None:
        self.signin = signin
        self._shell = shell
        self.static = static
        self.version = version

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
        fwd = self.signin.forwarded(req)
        s = await self.signin.session_of(req)
        if (
            fwd is not None
            and self.signin.sessions is not None
            and (s is None or (s.name, s.role) != (fwd.name, fwd.role))
        ):
            s, cookie = await self.signin.start(
                req, fwd.name, fwd.role, "forward auth", groups=fwd.groups
            )
        if s is None:
            await redirect(req, f"{PREFIX}/login?next={quote(req.path, safe='/')}")
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
        headers = list(SECURITY_HEADERS)
        if cookie is not None:
            headers.append((b"set-cookie", cookie))
        await respond(req, 200, body, HTML_TYPE, headers)

    async def static_file(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        data, ctype, digest = self.static[req.path.rsplit("/", 1)[-1]]
        versioned = query_of(req).get("v") == self.version
        cache = b"public, max-age=31536000, immutable" if versioned else b"no-cache"
        headers = [(b"cache-control", cache), (b"etag", f'"{digest}"'.encode()),
                   (b"x-content-type-options", b"nosniff")]  # fmt: skip
        if req.header(b"if-none-match") == f'"{digest}"'.encode():
            await respond(req, 304, b"", ctype, headers)
            return
        await respond(req, 200, data, ctype, headers)
