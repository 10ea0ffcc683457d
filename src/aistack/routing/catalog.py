"""Which backends have which models: discovered, declared, aliased, and cached briefly.

Every backend is asked what it has (in the background, every `ttl` seconds, with a
short timeout so a dead box never stalls a request), and what the config declares is
added. A name resolves through aliases to the deployments (backend + upstream name)
that serve it; a miss re-asks the backends once before answering 404 with the names
the caller probably meant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aistack.backends.base import Backend
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import ModelCard, canonical, close_matches

log = logging.getLogger("aistack.catalog")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One way to serve a model: this backend, under this upstream name."""

    backend: Backend
    model: str
    card: ModelCard

    @property
    def key(self) -> str:
        return f"{self.backend.name}/{self.model}"


@dataclass(slots=True)
class BackendState:
    """What a backend said last time it was asked."""

    cards: list[ModelCard] = field(default_factory=list)
    error: str = ""
    listed_at: float = 0.0
    latency: float | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """A model as /api/tags and /v1/models show it."""

    name: str  # canonical public name
    card: ModelCard
    backends: tuple[str, ...]
    alias_of: str = ""


class Catalog:
    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        declared: Mapping[str, Sequence[str]] | None = None,
        discover: Mapping[str, bool] | None = None,
        aliases: Mapping[str, str] | None = None,
        ttl: float = 10.0,
    ) -> None:
        self.backends = list(backends)
        self._declared = {k: list(v) for k, v in (declared or {}).items()}
        self._discover = dict(discover or {})
        self.aliases = {canonical(a): t for a, t in (aliases or {}).items()}
        self.ttl = ttl
        self.states: dict[str, BackendState] = {b.name: BackendState() for b in self.backends}
        self._index: dict[str, list[Deployment]] = {}
        # Bumped on every rebuild, so the router knows when its pools are stale.
        self.generation = 0
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._build()

    # -- lifecycle

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="catalog-refresh")

    async def close(self) -> None:
        for t in (self._loop_task, self._refreshing):
            if t is not None:
                t.cancel()
        self._loop_task = None

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # keep refreshing whatever one round did
                log.exception("model refresh failed")
            await asyncio.sleep(self.ttl)

    # -- discovery

    async def refresh(self) -> None:
        """Ask every backend at once; concurrent callers share one round."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_all())
        await asyncio.shield(self._refreshing)

    async def _refresh_all(self) -> None:
        await asyncio.gather(*(self._refresh_one(b) for b in self.backends))
        self._refreshed_at = time.monotonic()
        self._build()

    async def _refresh_one(self, b: Backend) -> None:
        state = self.states[b.name]
        if not self._discover.get(b.name, True):
            return
        t = time.monotonic()
        try:
            state.cards = await b.list_models()
            state.error = ""
            state.latency = time.monotonic() - t
        except GatewayError as e:
            state.error = e.message
            state.latency = None
            log.warning("cannot list models of backend %s: %s", b.name, e.message)
        except Exception as e:
            state.error = f"{type(e).__name__}: {e}"
            log.exception("listing models of backend %s failed", b.name)
        state.listed_at = time.time()

    def _build(self) -> None:
        index: dict[str, list[Deployment]] = {}
        for b in self.backends:
            seen: set[str] = set()
            for card in self.states[b.name].cards:
                key = canonical(card.name)
                seen.add(key)
                index.setdefault(key, []).append(Deployment(b, card.name, card))
            for name in self._declared.get(b.name, ()):
                key = canonical(name)
                if key not in seen:
                    seen.add(key)
                    card = ModelCard(name=name, backend=b.name, owned_by=b.name)
                    index.setdefault(key, []).append(Deployment(b, name, card))
        self._index = index
        self.generation += 1

    # -- resolution (hot path: dictionary lookups only)

    def _target(self, name: str) -> str:
        key = canonical(name)
        for _ in range(8):  # aliases may chain; a loop cannot
            target = self.aliases.get(key)
            if target is None:
                return key
            key = canonical(target)
        return key

    def resolve(self, name: str) -> list[Deployment]:
        return self._index.get(self._target(name), [])

    def models(self) -> list[str]:
        """Every canonical model name some backend serves."""
        return sorted(self._index)

    @property
    def refreshed(self) -> bool:
        """The first discovery round is over."""
        return self._refreshed_at > 0

    async def first_round(self) -> None:
        """Wait (briefly) for the first discovery round, so a fresh gateway lists models."""
        if self._refreshed_at:
            return
        try:
            async with asyncio.timeout(5.0):
                await self.refresh()
        except TimeoutError:
            pass

    async def lookup(
        self, name: str, shown: Callable[[str], bool] | None = None
    ) -> list[Deployment]:
        """Deployments for a name, or a 404 naming close matches (those `shown`)."""
        deps = self._index.get(self._target(name))
        if deps:
            return deps
        if time.monotonic() - self._refreshed_at > 2.0:
            await self.refresh()
            deps = self._index.get(self._target(name))
            if deps:
                return deps
        raise self.not_found(name, shown)

    def not_found(self, name: str, shown: Callable[[str], bool] | None = None) -> GatewayError:
        """A 404 naming close matches: among the names `shown` lets this caller see."""
        candidates = sorted(set(self._index) | set(self.aliases))
        if shown is not None:
            candidates = [c for c in candidates if shown(c)]
        hint = close_matches(name, candidates)
        msg = f"model '{name}' not found"
        if hint:
            msg += "; did you mean " + " or ".join(f"'{h}'" for h in hint) + "?"
        return GatewayError(ErrorKind.NOT_FOUND, msg, param="model", code="model_not_found")

    # -- listing

    def listed(self) -> list[Listed]:
        out: list[Listed] = []
        for key in sorted(self._index):
            deps = self._index[key]
            out.append(Listed(key, deps[0].card, tuple(d.backend.name for d in deps)))
        for alias in sorted(self.aliases):
            if alias in self._index:
                continue
            deps = self.resolve(alias)
            if deps:
                out.append(
                    Listed(
                        alias,
                        deps[0].card,
                        tuple(d.backend.name for d in deps),
                        alias_of=self._target(alias),
                    )
                )
        return out
