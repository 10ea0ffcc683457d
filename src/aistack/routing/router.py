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
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aistack.core.errors import ErrorKind, GatewayError
from aistack.routing.catalog import Deployment
from aistack.routing.failures import (
    _CONTEXT,
    _FAIL,
    _FATAL,
    _SKIP,
    _again,
    _busy_answer,
    _verdict,
    unavailable,
)
from aistack.routing.lines import Lines
from aistack.routing.loaded import Resident
from aistack.routing.pools import Attempt, Pool, Route, Tally
from aistack.routing.state import Slot

__all__ = ["Attempt", "Route", "Router"]

log = logging.getLogger("aistack.router")

T = TypeVar("T")


class Router(Lines):
    """Runs requests along their routes; its state and parts: routing/pools.py (routes,
    picking), routing/switching.py (what is loaded where), routing/lines.py (waiting)."""

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
                raise unavailable(route.name, chain)
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
