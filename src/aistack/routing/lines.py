"""Waiting in line: when every deployment of a chain is at its cap, cold and waiting for
room, or briefly busy, a request waits (one lane per key, routing/queue.py) until a
release hands it a deployment, in the queue's order; a switch owed to a request that
waited `switch_after` stops new requests for the models in its way."""

from __future__ import annotations

import asyncio
import logging
import time

from aistack.core.errors import ErrorKind, GatewayError
from aistack.routing.failures import _busy_answer
from aistack.routing.loaded import Resident
from aistack.routing.pools import Pool, Route, Tally
from aistack.routing.queue import FairQueue, Waiter
from aistack.routing.state import Slot
from aistack.routing.switching import Switching

log = logging.getLogger("aistack.router")


class Lines(Switching):
    """The router's lines of waiting requests and the releases that move them."""

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

    def _wake_all(self) -> None:
        if self.waiting:
            for q in self._queues.values():
                if q.live:
                    self._dispatch(q)
