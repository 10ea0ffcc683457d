"""The router's state and its routes: a name resolves (through aliases) to a route, the
model's pool of deployments, then its fallbacks', plus a chain for prompts too long for
the model; cached until the catalog rebuilds. Picking a deployment in a pool is one
synchronous pass (routing/strategy.py). The router (routing/router.py) is built on this,
routing/switching.py (what is loaded where) and routing/lines.py (waiting in line)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from aistack.backends.base import Backend, BackendConfig, LoadedModels
from aistack.config import ModelRoutingConfig, RoutingConfig
from aistack.core.models import canonical
from aistack.routing.catalog import Catalog, Deployment
from aistack.routing.defaults import Defaults
from aistack.routing.loaded import Card, Resident
from aistack.routing.queue import FairQueue
from aistack.routing.state import NO_CAP, BackendHealth, CooldownPolicy, Slot
from aistack.routing.strategy import STRATEGIES, select

log = logging.getLogger("aistack.router")


def reports_loaded(b: Backend) -> bool:
    """Whether the backend says which models it holds in memory (/api/ps)."""
    return isinstance(b, LoadedModels)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt of a request, for observers (metrics count retries by it)."""

    deployment: str  # backend/model
    backend: str
    error: str  # ErrorKind name
    status: int
    message: str
    # When it was tried (monotonic ns): traces show each attempt as a span.
    started_ns: int = 0
    ended_ns: int = 0


class Tally(Protocol):
    """Where a request's routing is recorded (service.RequestContext is one)."""

    deployment: Deployment | None
    attempts: int
    fallbacks: int
    failed: list[Attempt] | None
    attempt_ns: int  # when the attempt that answered started (monotonic ns)
    key_id: str  # whose turn it is in a queue (one lane per key)
    session: str  # a conversation, for sticky models ("" when none)
    queued_ns: int  # time spent waiting in line


class Pool:
    """The deployments of one model, in backend order, and its line of waiting requests
    (which outlives the pool: pools are rebuilt with the catalog, queues are not)."""

    __slots__ = ("name", "queue", "rr", "slots")

    def __init__(self, name: str, slots: list[Slot], queue: FairQueue[Slot] | None = None) -> None:
        self.name = name
        self.slots = slots
        self.rr = 0  # where the next scan starts (round robin among ties)
        self.queue: FairQueue[Slot] = queue if queue is not None else FairQueue(name)


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the canonical model the name resolves to
    strategy: int
    chain: tuple[Pool, ...]  # the model's pool, then its fallbacks'
    context_chain: tuple[Pool, ...]
    # From the most specific routing.models entry, else routing's own.
    queue_depth: int = 100
    queue_timeout: float = 30.0
    sticky: bool = False
    defaults: Defaults | None = None  # request fields to fill in (routing/defaults.py)


class Pools:
    """What the router knows: the slots, pools and routes, the cards (GPUs) and their
    residents, the lines of waiting requests, sticky conversations."""

    def __init__(
        self,
        catalog: Catalog,
        backends: Sequence[Backend],
        config: RoutingConfig | None = None,
        backend_configs: Sequence[BackendConfig] = (),
    ) -> None:
        c = config or RoutingConfig()
        self.catalog = catalog
        self.health: dict[str, BackendHealth] = {
            b.name: BackendHealth(b.name, b.kind) for b in backends
        }
        cd = c.cooldown
        self.policy = CooldownPolicy(cd.failures, cd.seconds, cd.max_seconds)
        self.strategy = STRATEGIES[c.strategy]
        self.retries = c.retries
        self.backoff = c.backoff
        self.backoff_max = c.backoff_max
        self.queue_timeout = c.queue_timeout
        self.queue_depth = c.queue_depth
        # How long a loaded model keeps its GPU against a switch after its last request,
        # and the longest a request for another model waits for it (the starvation bound).
        self.switch_after = c.switch_after
        self.models: dict[str, ModelRoutingConfig] = {canonical(k): v for k, v in c.models.items()}
        self._defaults: dict[str, tuple[float, int, int | None]] = {
            b.name: (b.weight, b.priority, b.max_in_flight) for b in backend_configs
        }
        self._slots: dict[tuple[str, str], Slot] = {}
        self._pools: dict[str, Pool] = {}
        self._routes: dict[str, Route] = {}
        self._generation = -1
        # What is loaded where: one card (GPU) per backend unless `memory` groups them;
        # only backends that say what they hold (/api/ps) get one.
        self.backends: dict[str, Backend] = {b.name: b for b in backends}
        self.cards: dict[str, Card] = {}
        self._card_of: dict[str, Card] = {}
        for b in backends:
            if reports_loaded(b):
                self._card_of[b.name] = self.cards[b.name] = Card(b.name, (b.name,))
        self._residents: dict[tuple[str, str], Resident] = {}  # of backends without a card
        # The lines of waiting requests, per model, and how many requests wait in all.
        self._queues: dict[str, FairQueue[Slot]] = {}
        self.waiting = 0
        # Sticky conversations: session -> the slot that served its last turn.
        self._sticky: dict[str, Slot] = {}
        # Called with a backend's name after a cold start there (the health monitor
        # asks it what it holds now, off the request path).
        self.on_load: Callable[[str], None] | None = None

    def memory(self, groups: dict[str, str], vram: dict[str, int]) -> None:
        """Which backends share a GPU (`gpu:`) and the VRAM each declares. Call before
        the first request; backends that do not report what they hold are left out."""
        by_group: dict[str, list[str]] = {}
        for name in self._card_of:
            by_group.setdefault(groups.get(name) or name, []).append(name)
        self.cards.clear()
        for group, names in by_group.items():
            declared = max((vram.get(n, 0) for n in names), default=0)
            card = Card(group, tuple(names), vram=declared)
            self.cards[group] = card
            for n in names:
                self._card_of[n] = card

    # -- resolution (cached until the catalog changes)

    def _sync(self) -> None:
        """Forget pools and routes once the catalog has rebuilt (slots keep their state)."""
        if self._generation != self.catalog.generation:
            self._generation = self.catalog.generation
            self._routes.clear()
            self._pools.clear()

    def route(self, name: str) -> Route | None:
        """The route for a name as the caller wrote it; None when nothing serves it."""
        if self._generation != self.catalog.generation:
            self._sync()
        r = self._routes.get(name)
        if r is None:
            r = self._build_route(name)
            if r is None:
                return None
            if len(self._routes) >= 4096:  # names as callers spell them: keep it bounded
                self._routes.clear()
            self._routes[name] = r
        return r

    def _hops(self, name: str) -> list[str]:
        """The name and every alias step to its model, canonical, model last."""
        key = canonical(name)
        hops = [key]
        for _ in range(8):  # aliases may chain; a loop cannot
            target = self.catalog.aliases.get(key)
            if target is None:
                break
            key = canonical(target)
            hops.append(key)
        return hops

    def _build_route(self, name: str) -> Route | None:
        hops = self._hops(name)
        target = hops[-1]
        cfg = next((self.models[h] for h in hops if h in self.models), None)
        strategy = STRATEGIES[cfg.strategy] if cfg and cfg.strategy else self.strategy
        names = [target]
        for f in cfg.fallbacks if cfg else ():
            t = self._hops(f)[-1]
            if t not in names:
                names.append(t)
        chain = tuple(self._pool(n) for n in names)
        if not any(p.slots for p in chain):
            return None
        ctx = tuple(self._pool(self._hops(f)[-1]) for f in (cfg.context_fallbacks if cfg else ()))
        depth = cfg.queue_depth if cfg else None
        wait = cfg.queue_timeout if cfg else None
        return Route(
            target,
            strategy,
            chain,
            ctx,
            queue_depth=self.queue_depth if depth is None else depth,
            queue_timeout=self.queue_timeout if wait is None else wait,
            sticky=bool(cfg and cfg.sticky),
            defaults=Defaults.of(cfg.defaults, cfg.force) if cfg else None,
        )

    def _pool(self, model: str) -> Pool:
        p = self._pools.get(model)
        if p is None:
            q = self._queues.get(model)
            if q is None:
                q = self._queues[model] = FairQueue(model)
            p = Pool(model, [self._slot(model, d, q) for d in self.catalog.resolve(model)], q)
            self._pools[model] = p
        return p

    def _slot(self, model: str, dep: Deployment, queue: FairQueue[Slot]) -> Slot:
        key = (dep.backend.name, model)
        s = self._slots.get(key)
        if s is not None:
            s.dep = dep  # the catalog made a fresh value; the state stays
            if not s.res.size and dep.card.size:
                s.res.size = dep.card.size
            return s
        weight, priority, cap = self._defaults.get(dep.backend.name, (1.0, 0, None))
        m = self.models.get(model)
        d = m.deployments.get(dep.backend.name) if m is not None else None
        if d is not None:
            weight = d.weight if d.weight is not None else weight
            priority = d.priority if d.priority is not None else priority
            cap = d.max_in_flight if d.max_in_flight is not None else cap
        b = dep.backend
        health = self.health.get(b.name)
        if health is None:
            health = self.health[b.name] = BackendHealth(b.name, b.kind)
        s = Slot(dep, health, weight=weight, priority=priority, cap=cap or NO_CAP)
        s.res = self.resident(b.name, dep.model, dep.card.size)
        s.queue = queue
        self._slots[key] = s
        return s

    def resident(self, backend: str, model: str, size: int = 0) -> Resident:
        """The memory record of one model on one backend (shared by all its names)."""
        card = self._card_of.get(backend)
        if card is not None:
            return card.resident(backend, model, size)
        key = (backend, canonical(model))
        r = self._residents.get(key)
        if r is None:
            r = self._residents[key] = Resident(backend, key[1], None, size=size)
        return r

    def in_flight_on(self, backend: str, model: str) -> int:
        """Requests running on this backend for this model (its upstream name), under
        whatever names they were routed: what GPU sharing checks before an unload."""
        card = self._card_of.get(backend)
        key = (backend, canonical(model))
        r = card.residents.get(key) if card is not None else self._residents.get(key)
        return r.running if r is not None else 0

    def pools(self) -> Iterator[Pool]:
        """Every model's pool as the catalog has them now (for /health)."""
        self._sync()
        for model in self.catalog.models():
            yield self._pool(model)

    # -- picking

    def pick(
        self,
        pool: Pool,
        strategy: int,
        now: float,
        exclude: list[Slot] | None,
        hold: float | None = None,
    ) -> Slot | None:
        slots = pool.slots
        if not slots:
            return None
        start = pool.rr
        pool.rr = start + 1 if start < 1 << 30 else 0
        if hold is None:
            hold = self.switch_after
        s = select(slots, strategy, now, start, exclude, hold)
        if s is not None and s.circuit.open_until:
            s.circuit.trial = True  # half-open: this request is the trial
        return s

    def _sticky_slot(self, pool: Pool, session: str, now: float) -> Slot | None:
        """The deployment that served this conversation's last turn, if it can take this
        one now (up, not cooling down, below its cap, its model not draining)."""
        s = self._sticky.get(session)
        if s is None or s not in pool.slots or s.in_flight >= s.cap or not s.health.up:
            return None
        c = s.circuit
        if c.open_until or s.res.draining:
            return None
        return s

    def _stick(self, session: str, slot: Slot) -> None:
        sticky = self._sticky
        if sticky.get(session) is slot:
            return
        sticky.pop(session, None)
        if len(sticky) >= 10_000:  # the oldest conversations go first
            del sticky[next(iter(sticky))]
        sticky[session] = slot

    def first_available(self, route: Route) -> Deployment | None:
        """A deployment to ask about the model (/api/show): the first that is up."""
        now = time.monotonic()
        for pool in route.chain:
            for s in pool.slots:
                if s.health.up and s.circuit.state(now) != "open":
                    return s.dep
        for pool in route.chain:
            if pool.slots:
                return pool.slots[0].dep
        return None

    def card_of(self, backend: str) -> Card | None:
        return self._card_of.get(backend)

    def queues(self) -> Iterator[FairQueue[Slot]]:
        """Every model's line of waiting requests (for /health and metrics)."""
        return iter(self._queues.values())

    # -- health

    def probe_ok(self, backend: str) -> None:
        now = time.monotonic()
        for (b, _), s in self._slots.items():
            if b == backend:
                s.circuit.probe_ok(now)
