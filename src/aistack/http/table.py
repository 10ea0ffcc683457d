"""The route table's shape: what an entry declares, and how a path finds its entry.

Each `Route` states everything the app decides before its handler runs: the methods
and the path, the dialect its errors speak, who may call it, and the operation it
performs. The app authenticates from `access`, and the request context carries `name`
and `operation`, which the limits, the ledger, metrics, logs and tracing read. The
gateway's own entries are in routes.py; a room (console/, and what comes: images/,
vectors/) declares its own entries in its own module and the app is built with them
(see aistack/rooms.py and docs/architecture.md, "Add a route").

Finding an entry: a fixed path is one dictionary lookup (the model APIs' hot paths);
only a miss tries the patterns (`{id}` is one path segment, `{rest:path}` the rest of
the path, slashes included), most specific first, then the same with repeated and
trailing slashes dropped. The query string is never part of the path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal

from aistack.access.scopes import SCOPES
from aistack.core.operations import Operation
from aistack.http.asgi import NO_PARAMS, Request
from aistack.service import Gateway, RequestContext

Handler = Callable[[Gateway, Request, RequestContext], Awaitable[None]]

# The shape of the errors a route answers (and of a 404 under its prefix):
# ollama: {"error": "..."}; openai: {"error": {"message", "type", "param", "code"}};
# anthropic: {"type": "error", "error": {"type", "message"}}; qdrant: {"status":
# {"error": "..."}}; plain: the gateway's own routes (health, metrics, the admin API,
# the console), in the OpenAI envelope that docs/admin-api.md describes.
Dialect = Literal["ollama", "openai", "anthropic", "qdrant", "plain"]


class Access(Enum):
    """Who may call a route."""

    PUBLIC = "public"  # anyone: probes, the console's pages and sign-in (which check)
    KEY = "key"  # an API key (or none while the gateway is open), or a console session
    ADMIN = "admin"  # an admin; a read-only viewer too for GET and HEAD
    VIEWER = "viewer"  # an admin or a read-only viewer, whatever the method


PUBLIC, KEY, ADMIN, VIEWER = Access.PUBLIC, Access.KEY, Access.ADMIN, Access.VIEWER
GET, POST, DELETE = ("GET",), ("POST",), ("DELETE",)

_SAFE = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table.

    `methods`: GET implies HEAD. `path`: fixed (`/api/chat`) or with parameters
    (`/v1/models/{id:path}`, `/admin/api/keys/{id}`), which the handler reads from
    `req.params`. `name`: the route's label in metrics, logs and the ledger (default:
    its path). `body`: read the whole body before the handler (default: for methods
    other than GET and HEAD). `scope`: on a KEY route, the right a caller needs beyond
    being let in (a name from access/scopes.py: `models`, `metrics`, ...): a key must
    have been given it unless it is a default one, a read-only console user holds only
    the defaults, and the master key, the admin key and an open gateway's local caller
    hold them all. Empty: any caller `access` lets in.
    """

    methods: tuple[str, ...]
    path: str
    handler: Handler
    dialect: Dialect
    access: Access
    operation: Operation = Operation.NONE
    name: str = ""
    body: bool | None = None
    scope: str = ""

    def __post_init__(self) -> None:
        methods = tuple(m.upper() for m in self.methods)
        if "GET" in methods and "HEAD" not in methods:
            methods += ("HEAD",)
        if not methods or not self.path.startswith("/"):
            raise ValueError(f"route {self.path!r}: needs methods and a path starting with /")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "name", self.name or self.path)
        if self.scope and (self.scope not in SCOPES or self.access is not Access.KEY):
            raise ValueError(
                f"route {self.path!r}: scope {self.scope!r} needs KEY access and a name "
                f"from access/scopes.py ({', '.join(SCOPES)})"
            )
        if self.body is None:
            object.__setattr__(self, "body", not _SAFE.issuperset(methods))

    @property
    def fixed(self) -> bool:
        return "{" not in self.path


@dataclass(frozen=True, slots=True)
class Mount:
    """A sub-tree of routes under a prefix (`Mount("/qdrant", QDRANT, "qdrant")`): each
    route's path is put after the prefix, and a path under the prefix that no route
    matches gets its 404 in `dialect` (when given)."""

    prefix: str
    routes: Sequence[Route | Mount]
    dialect: Dialect | None = None


Entry = Route | Mount


def _under(prefix: str, path: str) -> str:
    """`path` mounted under `prefix`: the mount's own root is the prefix itself."""
    prefix = prefix.rstrip("/")
    if path == "/":
        return prefix or "/"
    return prefix + path


def flatten(
    entries: Iterable[Entry], prefix: str = "", fallbacks: dict[str, Dialect] | None = None
) -> list[Route]:
    """Every route of `entries` with its full path; mounts' 404 dialects into
    `fallbacks` (prefix -> dialect)."""
    out: list[Route] = []
    for e in entries:
        if isinstance(e, Mount):
            p = _under(prefix, e.prefix) if e.prefix not in ("", "/") else prefix
            if e.dialect is not None and fallbacks is not None:
                fallbacks[p.rstrip("/") + "/"] = e.dialect
            out += flatten(e.routes, p, fallbacks)
        elif prefix:
            out.append(_replace_path(e, _under(prefix, e.path)))
        else:
            out.append(e)
    return out


def _replace_path(r: Route, path: str) -> Route:
    """`r` at `path` (a name that was its old path becomes its new one)."""
    return replace(r, path=path, name=r.name if r.name != r.path else "")


_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}$")


@dataclass(frozen=True, slots=True)
class _Pattern:
    template: str
    parts: tuple[str | tuple[str, bool], ...]  # a literal, or (name, rest-of-path)
    methods: dict[str, Route] = field(default_factory=dict)

    @staticmethod
    def parse(template: str) -> tuple[str | tuple[str, bool], ...]:
        parts: list[str | tuple[str, bool]] = []
        segs = template[1:].split("/")
        for i, seg in enumerate(segs):
            m = _PARAM.match(seg)
            if m is None:
                if "{" in seg or "}" in seg:
                    raise ValueError(f"route {template!r}: a parameter is a whole segment")
                parts.append(seg)
                continue
            rest = m.group(2) is not None
            if rest and i != len(segs) - 1:
                raise ValueError(f"route {template!r}: {{{m.group(1)}:path}} must come last")
            parts.append((m.group(1), rest))
        return tuple(parts)

    def rank(self) -> tuple[int, ...]:
        """Most specific first: at each segment a literal before a parameter before
        the rest of the path."""
        return tuple(0 if isinstance(p, str) else 2 if p[1] else 1 for p in self.parts)

    def match(self, segs: list[str]) -> dict[str, str] | None:
        parts = self.parts
        params: dict[str, str] = {}
        for i, p in enumerate(parts):
            if i >= len(segs):
                return None
            if isinstance(p, str):
                if segs[i] != p:
                    return None
            elif p[1]:
                rest = "/".join(segs[i:])
                if not rest:
                    return None
                params[p[0]] = rest
                return params
            elif segs[i]:
                params[p[0]] = segs[i]
            else:
                return None
        return params if len(segs) == len(parts) else None


Methods = dict[str, Route]


class RouteTable:
    """Routes by path and method, built once; `find` answers a path."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        fallbacks: dict[str, Dialect] = {"/v1/": "openai", "/admin/": "plain"}
        routes = flatten(entries, "", fallbacks)
        self.routes = routes
        self.fixed: dict[str, Methods] = {}
        patterns: dict[str, _Pattern] = {}
        for r in routes:
            if r.fixed:
                slot = self.fixed.setdefault(r.path, {})
            else:
                pat = patterns.get(r.path)
                if pat is None:
                    pat = patterns[r.path] = _Pattern(r.path, _Pattern.parse(r.path))
                slot = pat.methods
            for m in r.methods:
                if m in slot:
                    raise ValueError(f"route {m} {r.path} is declared twice")
                slot[m] = r
        # Patterns by their first segment (a literal in every pattern the gateway has),
        # most specific first.
        self._patterns: dict[str, list[_Pattern]] = {}
        self._wild: list[_Pattern] = []
        for pat in sorted(patterns.values(), key=_Pattern.rank):
            first = pat.parts[0]
            (self._patterns.setdefault(first, []) if isinstance(first, str) else self._wild).append(
                pat
            )
        self._fallbacks = sorted(fallbacks.items(), key=lambda kv: -len(kv[0]))

    def find(self, path: str) -> tuple[Methods | None, str, Mapping[str, str]]:
        """The routes for `path` by method, the path as matched, and its parameters."""
        methods = self.fixed.get(path)
        if methods is not None:
            return methods, path, NO_PARAMS
        if "//" in path or (path.endswith("/") and path != "/"):
            # Clients that join a base URL ending in '/' send //api/chat or a trailing '/'.
            path = re.sub(r"/{2,}", "/", path).rstrip("/") or "/"
            methods = self.fixed.get(path)
            if methods is not None:
                return methods, path, NO_PARAMS
        segs = path[1:].split("/")
        for pat in self._patterns.get(segs[0], self._wild):
            params = pat.match(segs)
            if params is not None:
                return pat.methods, path, params
        if segs[0] in self._patterns:
            for pat in self._wild:
                params = pat.match(segs)
                if params is not None:
                    return pat.methods, path, params
        return None, path, NO_PARAMS

    def dialect_at(self, path: str) -> Dialect:
        """The dialect of the route at `path` (whatever the method), else `dialect_of`:
        what an answer the server makes itself (a 400, 408, 413, 431, 503) speaks."""
        methods, path, _ = self.find(path)
        if methods:
            return next(iter(methods.values())).dialect
        return self.dialect_of(path)

    def dialect_of(self, path: str) -> Dialect:
        """The dialect a 404 for `path` speaks: its mount's, else by prefix (/v1/:
        OpenAI, /admin/: plain), else Ollama's (gin's plain-text 404)."""
        for prefix, dialect in self._fallbacks:
            if path.startswith(prefix) or path == prefix[:-1]:
                return dialect
        return "ollama"
