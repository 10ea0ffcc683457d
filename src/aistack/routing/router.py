"""From a model name to the deployment that answers: pools, chains, retries, cooldowns.

A public name resolves (through aliases) to a **route**: the model's pool of
deployments, then the pools of its fallbacks, in order, plus a separate chain for
prompts too long for the model. A request walks that chain:

- in each pool the strategy picks an eligible deployment (strategy.py); a failure
  before the first chunk moves on to another deployment of the pool at once, and back
  to one already tried only after a jittered backoff, at most `1 + retries` attempts
  per pool;
- when a pool has nothing left it moves to the next entry; a prompt too long for the
  model jumps to the context chain;
- a caller's mistake (400) ends it at once, in the caller's dialect.

Everything after the first chunk belongs to the answer: the in-flight count stays
taken until the answer ends, and a stream that breaks counts against its deployment's
circuit. Picking is synchronous and O(pool size); awaiting happens only around the
backend call, a backoff, or a wait for a free slot when every deployment is at its cap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aistack.backends.base import Backend, BackendConfig, LoadedModels, ModelMemory
from aistack.config import ModelRoutingConfig, RoutingConfig
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import LoadedModel, canonical
from aistack.routing.catalog import Catalog, Deployment
from aistack.routing.defaults import Defaults
from aistack.routing.loaded import Card, Resident
from aistack.routing.queue import FairQueue, Waiter
from aistack.routing.state import NO_CAP, BackendHealth, CooldownPolicy, Slot
from aistack.routing.strategy import STRATEGIES, select

log = logging.getLogger("aistack.router")

T = TypeVar("T")

# What a failed attempt means for the request and for the deployment.
_CONTEXT = 0  # the prompt is too long for this model: go to the context chain
_FATAL = 1  # the caller's doing: answer now
_SKIP = 2  # not here (404): try elsewhere, no penalty
_FAIL = 3  # the deployment's fault: counts against its circuit, try elsewhere

_DEPLOYMENT_FAULTS = (
    ErrorKind.UPSTREAM_UNREACHABLE,
    ErrorKind.UPSTREAM_TIMEOUT,
    ErrorKind.UPSTREAM_FAILED,
    ErrorKind.UPSTREAM_ERROR,
    ErrorKind.UPSTREAM_RATE_LIMITED,
    ErrorKind.INTERNAL,
)


def _again(e: GatewayError) -> bool:
    """Worth asking the same deployment again after a pause: it could not be reached,
    answered nonsense, or said it is briefly unable (a 5xx). Not our timeout (it already
    cost the caller that long), not a 429 (its cooldown says when)."""
    if e.kind is ErrorKind.UPSTREAM_UNREACHABLE:
        return True
    if e.upstream_status is None:
        return e.kind is ErrorKind.UPSTREAM_FAILED
    return e.kind.upstream and e.upstream_status in (500, 502, 503, 504)


def reports_loaded(b: Backend) -> bool:
    """Whether the backend says which models it holds in memory (/api/ps)."""
    return isinstance(b, LoadedModels)


def _busy_answer(e: GatewayError) -> bool:
    """The backend said it is busy (429, 503): worth waiting out, like a full pool."""
    return e.kind is ErrorKind.UPSTREAM_RATE_LIMITED or e.kind is ErrorKind.UPSTREAM_ERROR


def _verdict(e: GatewayError) -> int:
    if e.code == "context_length_exceeded":
        return _CONTEXT
    if e.kind in _DEPLOYMENT_FAULTS:
        return _FAIL
    if e.kind is ErrorKind.NOT_FOUND:
        return _SKIP
    return _FATAL


# The kind of "nothing is available" by the status its deployments failed with.
_UNAVAILABLE = {
    429: ErrorKind.UPSTREAM_RATE_LIMITED,
    502: ErrorKind.UPSTREAM_UNREACHABLE,
    504: ErrorKind.UPSTREAM_TIMEOUT,
}


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


class Router:
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

    # -- one request

    async def run(
        self, route: Route, call: Callable[[Deployment], Awaitable[T]], tally: Tally
    ) -> tuple[Slot, T]:
        """Call deployments along the route until one answers.

        Returns the slot that answered, still counted in flight: the caller ends it
        with `finished`, `broke` or `abandoned`. Raises the error to show the caller.
        """
        chain = route.chain
        strategy = route.strategy
        in_context_chain = False
        i = n = hops = 0
        tried: list[Slot] | None = None
        again: list[Slot] | None = None
        last: GatewayError | None = None
        too_long: GatewayError | None = None  # what sent the request to the context chain
        deadline: float | None = None
        granted: Slot | None = None  # handed over by the queue, already counted in flight
        unload: list[Resident] = []
        cold = False
        session = tally.session if route.sticky else ""
        while True:
            if i >= len(chain):
                now = time.monotonic()
                limit = deadline if deadline is not None else now + route.queue_timeout
                if self._waitable(chain, last, now, limit):
                    # Nothing can take it now, but something will: wait in line.
                    if deadline is None:
                        deadline = limit
                    not_before = now + self._backoff(n) if last is not None else 0.0
                    granted, unload, cold = await self._queue_for(
                        route, chain, strategy, tally, deadline, not_before
                    )
                    i = next(k for k, p in enumerate(chain) if granted in p.slots)
                    n = 0
                    tried = again = None
                    last = None
                    continue
                if last is not None:
                    raise last
                if too_long is not None and not any(p.slots for p in chain):
                    raise too_long  # no model with a longer context is known
                raise self.unavailable(route.name, chain)
            pool = chain[i]
            slot: Slot | None = None
            reserved = False
            if granted is not None:
                slot, granted, reserved = granted, None, True
            elif n <= self.retries:
                if pool.queue.live and tried is None:
                    pass  # others are waiting for this model: get in line behind them
                else:
                    now = time.monotonic()
                    if session and i == 0 and tried is None:
                        slot = self._sticky_slot(pool, session, now)
                    if slot is None:
                        slot = self.pick(pool, strategy, now, tried)
                    if slot is None and again:
                        # Only deployments already tried are left: again, after a pause.
                        await asyncio.sleep(self._backoff(n))
                        slot = self.pick(Pool(pool.name, again), strategy, time.monotonic(), None)
            if slot is None:
                i += 1
                n = 0
                tried = again = None
                if i < len(chain):
                    hops += 1
                continue
            n += 1
            tally.attempts += 1
            tally.deployment = slot.dep
            t0 = time.monotonic()
            if not reserved:
                slot.in_flight += 1
                res = slot.res
                res.running += 1
                res.last_used = t0
                cold = not res.loaded and res.card is not None
                if cold:
                    unload = self._take(slot, t0, self.switch_after)
            slot.requests += 1
            tally.attempt_ns = t0_ns = time.monotonic_ns()
            try:
                if unload:
                    await self._unload(unload)
                    unload = []
                value = await call(slot.dep)
            except GatewayError as e:
                if cold:
                    cold = False
                    self._cold_start(slot)
                verdict = self._failed(slot, e, tally, t0_ns)
                if verdict == _CONTEXT:
                    if not in_context_chain:
                        if not route.context_chain:
                            raise
                        # A longer-context model, not another deployment of this one.
                        in_context_chain = True
                        chain = route.context_chain
                        too_long, last = e, None
                        i = n = 0
                    else:
                        # This one is too short as well: the next context fallback.
                        last = e
                        i += 1
                        n = 0
                    hops += 1
                    tried = again = None
                    continue
                if verdict == _FATAL:
                    raise
                last = e
                if tried is None:
                    tried = []
                tried.append(slot)
                if verdict == _FAIL and _again(e):
                    if again is None:
                        again = []
                    if slot not in again:
                        again.append(slot)
                continue
            except BaseException:
                self.abandoned(slot)
                raise
            now = time.monotonic()
            if cold:
                self._cold_start(slot)
            c = slot.circuit
            if c.open_until or c.failures or c.trial:
                if c.open_until:
                    log.info("deployment %s answers again", slot.key)
                c.success()
            slot.sample_ttft(now - t0, now)
            tally.fallbacks = hops
            if session:
                self._stick(session, slot)
            return slot, value

    def _backoff(self, n: int) -> float:
        d: float = min(self.backoff_max, self.backoff * 2.0 ** max(0, n - 1))
        return d / 2 + random.random() * d / 2  # noqa: S311  # jitter, not crypto

    # -- memory: cold starts and switches

    def _take(self, slot: Slot, now: float, hold: float) -> list[Resident]:
        """A request goes to `slot` whose model is cold there: count it loaded (so the
        next requests follow it), and say which idle models to unload first."""
        r = slot.res
        card = r.card
        if card is None:
            return []
        victims = card.victims(r, now, hold) if card.budget else []
        r.loaded = True
        r.loads += 1
        if victims:
            card.switches += 1
            for v in victims:
                card.unloaded(v)
            log.info(
                "switch on %s: unloading %s for %s on %s",
                card.name,
                ", ".join(f"{v.model} ({v.backend})" for v in victims),
                r.model,
                r.backend,
            )
        return victims

    async def _unload(self, victims: list[Resident]) -> None:
        """Unload the models a switch pushes out, before the request that needs the room."""
        for v in victims:
            b = self.backends.get(v.backend)
            if not isinstance(b, ModelMemory):
                continue
            try:
                await b.unload(v.model)
            except GatewayError as e:
                log.warning("unloading %s from %s failed: %s", v.model, v.backend, e.message)

    def _cold_start(self, slot: Slot) -> None:
        """After a request that loaded a model: have the backend asked what it holds."""
        cb = self.on_load
        if cb is not None:
            cb(slot.dep.backend.name)

    # -- waiting in line

    def _waitable(
        self, chain: tuple[Pool, ...], last: GatewayError | None, now: float, limit: float
    ) -> bool:
        """Whether something in the chain will be able to take the request before `limit`:
        a deployment at its cap, one whose model is cold and waits for room, one cooling
        down after a busy answer that ends in time, or (after a busy answer) one that only
        needs a pause. Not: backends that are down, or failures of other kinds."""
        if last is not None and not _busy_answer(last):
            return False
        for p in chain:
            if p.queue.live:
                return True
            for s in p.slots:
                if not s.health.up:
                    continue
                c = s.circuit
                if c.open_until > now:
                    if c.busy and c.open_until < limit:
                        return True
                    continue
                if c.open_until and c.trial:
                    continue  # its half-open trial is in flight
                return True  # at its cap, draining, waiting for room, or said busy
        return False

    async def _queue_for(
        self,
        route: Route,
        chain: tuple[Pool, ...],
        strategy: int,
        tally: Tally,
        deadline: float,
        not_before: float,
    ) -> tuple[Slot, list[Resident], bool]:
        """Wait in line (one lane per key) until the queue hands this request a
        deployment; the deployment comes counted in flight. A 503 with Retry-After when
        the line is full or the wait reaches `deadline`."""
        now = time.monotonic()
        head = chain[0].queue
        if head.live >= route.queue_depth:
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR,
                f"too many requests are waiting for '{route.name}' "
                f"({head.live}, routing queue_depth {route.queue_depth}); try again shortly",
                retry_after=1,
            )
        w: Waiter[Slot] = Waiter(tally.key_id, now, strategy)
        w.not_before = not_before
        for p in chain:
            p.queue.push(w)
        self.waiting += 1
        loop = asyncio.get_running_loop()
        try:
            while True:
                for q in w.queues:
                    self._dispatch(q)
                    if w.slot is not None:
                        break
                slot = w.slot
                if slot is not None:
                    unload, w.unload = w.unload, []
                    w.slot = None
                    return slot, unload, w.cold
                now = time.monotonic()
                if now >= deadline:
                    raise GatewayError(
                        ErrorKind.UPSTREAM_ERROR,
                        f"every deployment of '{route.name}' is busy; waited "
                        f"{now - w.since:.0f}s (routing queue_timeout {route.queue_timeout:g}s)",
                        retry_after=self._retry_hint(chain, now),
                    )
                wake = min(deadline, self._recheck(w, chain, now))
                fut = w.future = loop.create_future()
                try:
                    async with asyncio.timeout(max(0.0, wake - now)):
                        await fut
                except TimeoutError:
                    pass
                finally:
                    w.future = None
        finally:
            if w.leave():
                self.waiting -= 1
            self._unowe(w)
            if w.slot is not None:  # handed a deployment, but gone before using it
                slot, w.slot = w.slot, None
                self._release(slot)
            tally.queued_ns += max(1, int((time.monotonic() - w.since) * 1e9))

    def _retry_hint(self, chain: tuple[Pool, ...], now: float) -> float:
        """Retry-After for a request that waited in vain: when a busy deployment's
        cooldown ends, else a second."""
        ends = [s.circuit.open_until for p in chain for s in p.slots if s.circuit.open_until > now]
        return max(1.0, min(ends) - now) if ends else 1.0

    def _recheck(self, w: Waiter[Slot], chain: tuple[Pool, ...], now: float) -> float:
        """When the line may move without a deployment being released: a backend's pause
        or cooldown ends, a loaded model's hold runs out, or this request becomes owed."""
        t = now + 60.0
        if w.not_before > now:
            t = min(t, w.not_before)
        if not w.owed:
            t = min(t, w.since + self.switch_after)
        for p in chain:
            for s in p.slots:
                c = s.circuit
                if c.open_until > now:
                    t = min(t, c.open_until)
                card = s.res.card
                if card is not None and card.budget and not s.res.loaded:
                    nxt = card.next_change(now, self.switch_after)
                    if nxt is not None:
                        t = min(t, nxt)
        return max(t, now + 0.001)

    def _dispatch(self, q: FairQueue[Slot]) -> None:
        """Hand free deployments to the requests in line, in turn, while there are any."""
        pool: Pool | None = None
        while q.live:
            w = q.peek()
            if w is None:
                return
            now = time.monotonic()
            if w.not_before > now:
                return
            if pool is None:
                pool = self._pools.get(q.model) or self._pool(q.model)
            owed = w.owed or now - w.since >= self.switch_after
            hold = 0.0 if owed else self.switch_after
            s = self.pick(pool, w.strategy, now, None, hold)
            if s is None:
                if owed and not w.owed:
                    w.owed = True
                    self._owe(pool, w, now)
                return
            q.pop()
            q.served += 1
            q.waited += now - w.since
            if w.leave():
                self.waiting -= 1
            self._unowe(w)
            s.in_flight += 1
            r = s.res
            r.running += 1
            r.last_used = now
            w.cold = not r.loaded and r.card is not None
            if w.cold:
                w.unload = self._take(s, now, hold)
            w.slot = s
            w.wake()

    def _owe(self, pool: Pool, w: Waiter[Slot], now: float) -> None:
        """`w` has waited `switch_after` for a model that needs another's room: on the
        first card where the models in its way could go once their requests end, stop
        sending those models new requests there."""
        for s in pool.slots:
            r = s.res
            card = r.card
            if card is None or not card.budget or r.loaded or card.pending is not None:
                continue
            if not s.health.up or s.circuit.open_until:
                continue
            victims = card.victims(r, now, 0.0, running=True)
            if not victims:
                continue
            card.pending = w
            w.drained = victims
            for v in victims:
                v.draining = True
            log.info(
                "switch owed on %s: %s waits; %s take no new requests there",
                card.name,
                r.model,
                ", ".join(v.model for v in victims),
            )
            return

    def _unowe(self, w: Waiter[Slot]) -> None:
        for v in w.drained:
            v.draining = False
            card = v.card
            if card is not None and card.pending is w:
                card.pending = None
        w.drained = []

    def _release(self, slot: Slot) -> None:
        slot.in_flight -= 1
        r = slot.res
        r.running -= 1
        r.last_used = time.monotonic()
        if self.waiting:
            q = slot.queue
            if q is not None and q.live:
                self._dispatch(q)
            if r.running == 0 and r.card is not None:
                self._wake_all()  # a model went idle: a switch waiting for room may go now

    def _failed(self, slot: Slot, e: GatewayError, tally: Tally, started_ns: int = 0) -> int:
        self._release(slot)
        verdict = _verdict(e)
        failed = tally.failed
        if failed is None:
            failed = tally.failed = []
        failed.append(
            Attempt(
                slot.key,
                slot.dep.backend.name,
                e.kind.name,
                e.upstream_status or e.status,
                e.message,
                started_ns,
                time.monotonic_ns(),
            )
        )
        if verdict == _FAIL:
            self._count_failure(slot, e)
        else:
            if verdict == _SKIP:
                slot.last_error = e.message
                slot.last_status = e.status
                slot.last_error_at = time.time()
            slot.circuit.release_trial()
        return verdict

    def _count_failure(self, slot: Slot, e: GatewayError) -> None:
        slot.errors += 1
        slot.last_error = e.message
        slot.last_status = e.status
        slot.last_error_at = time.time()
        rate_limited = e.kind is ErrorKind.UPSTREAM_RATE_LIMITED
        if slot.circuit.failure(
            time.monotonic(),
            self.policy,
            rate_limited=rate_limited,
            retry_after=e.retry_after,
            unreachable=e.kind is ErrorKind.UPSTREAM_UNREACHABLE,
            busy=_busy_answer(e),
        ):
            log.warning(
                "deployment %s cooling down for %.0fs after %s: %s",
                slot.key,
                slot.circuit.cooldown,
                "a 429" if rate_limited else f"{slot.circuit.failures} failure(s)",
                e.message,
            )

    # -- the end of an answer (after its first chunk)

    def finished(self, slot: Slot) -> None:
        self._release(slot)

    def broke(self, slot: Slot, e: GatewayError) -> None:
        """The answer failed after its first chunk (a cut stream, an idle timeout)."""
        self._release(slot)
        if _verdict(e) == _FAIL:
            self._count_failure(slot, e)

    def abandoned(self, slot: Slot) -> None:
        """The caller went away: neither success nor failure."""
        self._release(slot)
        slot.circuit.release_trial()

    # -- what the backends say they hold

    def observe_loaded(self, backend: str, models: list[LoadedModel]) -> None:
        """A backend's /api/ps answer: what it holds now (the monitor polls it)."""
        card = self._card_of.get(backend)
        if card is None:
            return
        card.observe(backend, models, time.monotonic(), time.time())
        self._wake_all()

    def _memory_of(self, backend: str) -> ModelMemory:
        b = self.backends.get(backend)
        if b is None:
            raise GatewayError(
                ErrorKind.NOT_FOUND, f"no backend named '{backend}'", param="backend"
            )
        if not isinstance(b, ModelMemory):
            raise b.cannot("load or unload models")
        return b

    async def load(self, backend: str, model: str, keep_alive: float | str | None = None) -> None:
        """Load a model on a backend now (a preload, the console's button), and count it
        loaded there so requests for it go there."""
        b = self._memory_of(backend)
        await b.load(model, keep_alive)
        r = self.resident(backend, model)
        if not r.loaded and r.card is not None:
            r.loaded = True
            r.loads += 1
        r.last_used = time.monotonic()
        cb = self.on_load
        if cb is not None:
            cb(backend)

    async def unload(self, backend: str, model: str) -> bool:
        """Unload a model from a backend unless a request is running on it there (then
        False, and nothing is done: a model is never unloaded under a running request).
        While it unloads, new requests for it there wait or go elsewhere."""
        b = self._memory_of(backend)
        r = self.resident(backend, model)
        if r.running:
            return False
        held = r.draining
        r.draining = True
        try:
            await b.unload(r.model if r.card is not None else model)
        finally:
            r.draining = held
        card = r.card
        if card is not None:
            card.unloaded(r)
        self._wake_all()
        return True

    def place(self, name: str) -> Slot | None:
        """Where a load of `name` should go now: where it is loaded already, else where
        requests for it would go (it fits, or only idle models are in its way)."""
        route = self.route(name)
        if route is None or not route.chain[0].slots:
            return None
        pool = route.chain[0]
        usable = [s for s in pool.slots if isinstance(s.dep.backend, ModelMemory)]
        return select(usable, route.strategy, time.monotonic(), 0, None, self.switch_after)

    def _wake_all(self) -> None:
        if self.waiting:
            for q in self._queues.values():
                if q.live:
                    self._dispatch(q)

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

    def unavailable(self, name: str, chain: Sequence[Pool]) -> GatewayError:
        """Nothing in the chain can take a request: say why, and when to come back.

        The status is what the failures that took the deployments out were (502
        unreachable, 504 timed out, 429 rate limited) when they agree, else 503, so a
        client sees the same status whether the failure is found now or was found by
        an earlier request or a probe.
        """
        now = time.monotonic()
        parts: list[str] = []
        statuses: set[int] = set()
        retry_at = math.inf
        for pool in chain:
            for s in pool.slots:
                state = s.state(now)
                if state == "cooldown":
                    retry_at = min(retry_at, s.circuit.open_until)
                    statuses.add(s.last_status or 503)
                    left = s.circuit.open_until - now
                    why = s.last_error or "failing"
                    parts.append(f"{s.key} cooling down for {left:.0f}s after: {why}")
                elif state == "down":
                    statuses.add(s.health.status or 502)
                    parts.append(f"{s.key} down: {s.health.error or 'its probe failed'}")
                elif state == "half-open":
                    statuses.add(503)
                    retry_at = min(retry_at, now + 1)
                    parts.append(f"{s.key} being tried again")
        detail = "; ".join(parts) if parts else "no deployments"
        status = statuses.pop() if len(statuses) == 1 else 503
        if status < 429 or status == 501:
            status = 503
        kind = _UNAVAILABLE.get(status, ErrorKind.UPSTREAM_ERROR)
        return GatewayError(
            kind,
            f"no deployment of '{name}' is available: {detail}",
            retry_after=max(1.0, retry_at - now) if retry_at != math.inf else None,
        )
