"""What is loaded where, seen from the router: a request for a model cold on its GPU
counts it loaded and unloads the idle models in its way first (a switch); loads and
unloads asked for (a preload, the console); what the backends say they hold. The rules
for a card (fits, switch, or wait) are routing/loaded.py's."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aistack.backends.base import ModelMemory
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import LoadedModel
from aistack.routing.loaded import Resident
from aistack.routing.pools import Pools
from aistack.routing.state import Slot
from aistack.routing.strategy import select

log = logging.getLogger("aistack.router")


class Switching(Pools):
    """The router's cold starts, switches, loads and unloads."""

    if TYPE_CHECKING:

        def _wake_all(self) -> None: ...  # the lines move on (routing/lines.py)

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
