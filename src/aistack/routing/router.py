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
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aistack.backends.base import Backend, BackendConfig
from aistack.config import ModelRoutingConfig, RoutingConfig
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import canonical
from aistack.routing.catalog import Catalog, Deployment
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


class Pool:
    """The deployments of one model, in backend order."""

    __slots__ = ("name", "rr", "slots")

    def __init__(self, name: str, slots: list[Slot]) -> None:
        self.name = name
        self.slots = slots
        self.rr = 0  # where the next scan starts (round robin among ties)


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the canonical model the name resolves to
    strategy: int
    chain: tuple[Pool, ...]  # the model's pool, then its fallbacks'
    context_chain: tuple[Pool, ...]


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
        self.models: dict[str, ModelRoutingConfig] = {canonical(k): v for k, v in c.models.items()}
        self._defaults: dict[str, tuple[float, int, int | None]] = {
            b.name: (b.weight, b.priority, b.max_in_flight) for b in backend_configs
        }
        self._slots: dict[tuple[str, str], Slot] = {}
        self._pools: dict[str, Pool] = {}
        self._routes: dict[str, Route] = {}
        self._generation = -1
        self._waiters: deque[asyncio.Future[None]] = deque()

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
        return Route(target, strategy, chain, ctx)

    def _pool(self, model: str) -> Pool:
        p = self._pools.get(model)
        if p is None:
            p = Pool(model, [self._slot(model, d) for d in self.catalog.resolve(model)])
            self._pools[model] = p
        return p

    def _slot(self, model: str, dep: Deployment) -> Slot:
        key = (dep.backend.name, model)
        s = self._slots.get(key)
        if s is not None:
            s.dep = dep  # the catalog made a fresh value; the state stays
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
        self._slots[key] = s
        return s

    def pools(self) -> Iterator[Pool]:
        """Every model's pool as the catalog has them now (for /health)."""
        self._sync()
        for model in self.catalog.models():
            yield self._pool(model)

    # -- picking

    def pick(
        self, pool: Pool, strategy: int, now: float, exclude: list[Slot] | None
    ) -> Slot | None:
        slots = pool.slots
        if not slots:
            return None
        start = pool.rr
        pool.rr = start + 1 if start < 1 << 30 else 0
        s = select(slots, strategy, now, start, exclude)
        if s is not None and s.circuit.open_until:
            s.circuit.trial = True  # half-open: this request is the trial
        return s

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
        while True:
            if i >= len(chain):
                if last is None and self._busy(chain):
                    # Every deployment that could answer is at its cap: wait for one.
                    loop = asyncio.get_running_loop()
                    if deadline is None:
                        deadline = loop.time() + self.queue_timeout
                    await self._wait_for_slot(deadline, route)
                    i = n = 0
                    tried = again = None
                    continue
                if last is not None:
                    raise last
                if too_long is not None and not any(p.slots for p in chain):
                    raise too_long  # no model with a longer context is known
                raise self.unavailable(route.name, chain)
            pool = chain[i]
            slot: Slot | None = None
            if n <= self.retries:
                slot = self.pick(pool, strategy, time.monotonic(), tried)
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
            slot.in_flight += 1
            slot.requests += 1
            t0 = time.monotonic()
            tally.attempt_ns = t0_ns = time.monotonic_ns()
            try:
                value = await call(slot.dep)
            except GatewayError as e:
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
            c = slot.circuit
            if c.open_until or c.failures or c.trial:
                if c.open_until:
                    log.info("deployment %s answers again", slot.key)
                c.success()
            slot.sample_ttft(now - t0, now)
            tally.fallbacks = hops
            return slot, value

    def _backoff(self, n: int) -> float:
        d: float = min(self.backoff_max, self.backoff * 2.0 ** max(0, n - 1))
        return d / 2 + random.random() * d / 2  # noqa: S311  # jitter, not crypto

    def _busy(self, chain: tuple[Pool, ...]) -> bool:
        now = time.monotonic()
        return any(s.state(now) == "busy" for p in chain for s in p.slots)

    async def _wait_for_slot(self, deadline: float, route: Route) -> None:
        """Wait until some deployment drops below its cap (or the deadline passes)."""
        busy = GatewayError(
            ErrorKind.UPSTREAM_ERROR,
            f"every deployment of '{route.name}' is busy (max_in_flight); "
            f"waited {self.queue_timeout:g}s for a free one",
            retry_after=1,
        )
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            raise busy
        fut = loop.create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            raise busy from None
        finally:
            if not fut.done():
                fut.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    def _release(self, slot: Slot) -> None:
        slot.in_flight -= 1
        if self._waiters and slot.in_flight + 1 >= slot.cap:
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break

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
