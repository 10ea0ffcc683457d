"""Background health probes, and the report behind `GET /health`.

Each backend reached over the network is probed on its own task, so one slow box never
delays the others: Ollama with `GET /api/version`, OpenAI-compatible servers with
`GET {url}/models`. A failed probe marks the backend down (its deployments are skipped
until a probe succeeds), a down backend is probed every min(interval, 5) seconds, and
a successful probe ends the cooldowns its deployments got for being unreachable. The
embedded engine needs no probe. Nothing here runs on the request path, and `/health`
never calls a model: it reports what the probes and the requests have already seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from aistack.backends.base import Backend, LoadedModels
from aistack.core.errors import GatewayError
from aistack.routing.loaded import Card
from aistack.routing.router import Router
from aistack.routing.state import NO_CAP, BackendHealth

log = logging.getLogger("aistack.health")

DOWN_PROBE_INTERVAL = 5.0


class HealthMonitor:
    def __init__(
        self,
        backends: Sequence[Backend],
        router: Router,
        *,
        interval: float = 30.0,
        timeout: float = 5.0,
        preload: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.backends = list(backends)
        self.router = router
        self.interval = interval
        self.timeout = timeout
        # Models each backend should have loaded: loaded at start and when it comes back.
        self.preload = {k: list(v) for k, v in (preload or {}).items() if v}
        self._tasks: list[asyncio.Task[None]] = []
        # Asking a backend what it holds after a cold start there: one at a time each.
        self._asking: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        router.on_load = self.loaded_changed

    async def start(self) -> None:
        if self.interval <= 0:
            for b in self.backends:  # no probes to wait for: preload at once
                if b.name in self.preload:
                    self._spawn(f"preload-{b.name}", self._preload(b))
            return
        for b in self.backends:
            if b.probes:
                self._tasks.append(asyncio.create_task(self._watch(b), name=f"probe-{b.name}"))

    async def close(self) -> None:
        self.router.on_load = None
        tasks = self._tasks + list(self._asking.values()) + list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._asking.clear()

    # -- what is loaded where

    async def refresh_loaded(self, b: Backend) -> None:
        """Ask one backend what it holds (/api/ps) and tell the router; a failure leaves
        what the router knew (the next probe asks again)."""
        if self.router.card_of(b.name) is None or not isinstance(b, LoadedModels):
            return
        try:
            async with asyncio.timeout(self.timeout):
                models = await b.ps()
        except (GatewayError, TimeoutError) as e:
            why = e.message if isinstance(e, GatewayError) else "timed out"
            log.debug("cannot ask %s what it holds: %s", b.name, why)
            return
        self.router.observe_loaded(b.name, models)

    def loaded_changed(self, backend: str) -> None:
        """A request loaded a model there: ask what it holds now, off the request path
        (once at a time per backend; a second call while asking asks again after)."""
        b = next((x for x in self.backends if x.name == backend), None)
        if b is None:
            return
        if backend in self._asking:
            self._again.add(backend)
            return

        async def ask() -> None:
            try:
                while True:
                    self._again.discard(backend)
                    await self.refresh_loaded(b)
                    if backend not in self._again:
                        return
                    # Cold starts in a row (a backend whose /api/ps never lists what it
                    # serves): at most one question a second.
                    await asyncio.sleep(1.0)
            finally:
                self._asking.pop(backend, None)

        try:
            self._asking[backend] = asyncio.get_running_loop().create_task(ask())
        except RuntimeError:  # no loop (a test driving the router synchronously)
            pass

    async def _watch(self, b: Backend) -> None:
        h = self.router.health[b.name]
        while True:
            try:
                await self.probe(b)
            except Exception:  # keep probing whatever one probe did
                log.exception("probing backend %s failed", b.name)
            await asyncio.sleep(self.interval if h.up else min(self.interval, DOWN_PROBE_INTERVAL))

    async def probe(self, b: Backend) -> bool:
        """Probe one backend now and record the result; True when it answered."""
        h = self.router.health[b.name]
        t = time.monotonic()
        error = ""
        try:
            async with asyncio.timeout(self.timeout):
                await b.probe()
        except GatewayError as e:
            error, h.status = e.message, e.status
        except TimeoutError:
            error = f"backend '{b.name}' timed out: no answer to the health probe within "
            error += f"{self.timeout:g}s"
            h.status = 504
        came_back = not h.probed or not h.up
        h.probed = True
        h.checked_at = time.time()
        if error:
            h.failures += 1
            h.error = error
            h.latency = None
            if h.up:
                log.warning("backend %s is down: %s", b.name, error)
            h.up = False
            return False
        h.latency = time.monotonic() - t
        h.failures = 0
        h.error = ""
        if not h.up:
            log.info("backend %s is up again", b.name)
        h.up = True
        self.router.probe_ok(b.name)
        await self.refresh_loaded(b)
        if came_back and b.name in self.preload:
            self._spawn(f"preload-{b.name}", self._preload(b))
        return True

    async def _preload(self, b: Backend) -> None:
        """Load the backend's `preload:` models that it does not hold already."""
        for model in self.preload.get(b.name, ()):
            r = self.router.resident(b.name, model)
            if r.loaded:
                continue
            try:
                await self.router.load(b.name, model)
                log.info("preloaded %s on %s", model, b.name)
            except GatewayError as e:
                log.warning("preloading %s on %s failed: %s", model, b.name, e.message)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def backend_report(h: BackendHealth, card: Card | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": h.name,
        "kind": h.kind,
        "state": ("up" if h.up else "down") if h.probed else ("up" if h.up else "unknown"),
        "probed": h.probed,
        "latency_ms": _ms(h.latency),
        "error": h.error or None,
        "checked_at": h.checked_at or None,
    }
    if card is not None:
        # What it holds, as its last /api/ps and this gateway's own traffic say.
        out["loaded"] = [
            {
                "model": r.model,
                "size": r.size or None,
                "running": r.running,
                "draining": r.draining,
                "expires_at": r.expires_at,
            }
            for (b, _), r in sorted(card.residents.items())
            if b == h.name and r.loaded
        ]
        out["gpu"] = card.name
    return out


def memory_report(card: Card) -> dict[str, Any]:
    return {
        "gpu": card.name,
        "backends": list(card.backends),
        "vram": card.vram or None,
        "budget": card.budget or None,  # vram, or learned once an eviction was seen
        "learned": card.learned or None,
        "used": card.used(),
        "switches": card.switches,
        "evictions_seen": card.evictions,
    }


def queue_report(router: Router) -> list[dict[str, Any]]:
    now = time.monotonic()
    out: list[dict[str, Any]] = []
    for q in router.queues():
        if not q.live and not q.served:
            continue
        waiting = q.waiting()
        oldest = max((now - w.since for w in waiting), default=0.0)
        out.append(
            {
                "model": q.model,
                "waiting": q.live,
                "longest_wait_s": round(oldest, 3),
                "served": q.served,
                "waited_s": round(q.waited, 3),
            }
        )
    return out


def report(router: Router) -> dict[str, Any]:
    """Every backend and every deployment: state, last error, latency."""
    now = time.monotonic()
    deployments: list[dict[str, Any]] = []
    usable = total = 0
    for pool in router.pools():
        for s in pool.slots:
            state = s.state(now)
            total += 1
            if state in ("ok", "busy", "half-open"):
                usable += 1
            c = s.circuit
            deployments.append(
                {
                    "model": pool.name,
                    "backend": s.dep.backend.name,
                    "upstream_model": s.dep.model,
                    "state": state,
                    "in_flight": s.in_flight,
                    "max_in_flight": s.cap if s.cap != NO_CAP else None,
                    "weight": s.weight,
                    "priority": s.priority,
                    "consecutive_failures": c.failures,
                    "cooldown_remaining_s": (
                        round(c.open_until - now, 1) if c.open_until > now else None
                    ),
                    "ttft_ms": _ms(s.ttft) if s.ttft else None,
                    "loaded": s.res.loaded if s.res.card is not None else None,
                    "requests": s.requests,
                    "errors": s.errors,
                    "last_error": s.last_error or None,
                    "last_error_at": s.last_error_at or None,
                }
            )
    status = "ok" if usable == total else ("degraded" if usable else "down")
    if not total:
        status = "down"
    return {
        "status": status,
        "backends": [backend_report(h, router.card_of(h.name)) for h in router.health.values()],
        "deployments": deployments,
        "memory": [memory_report(c) for c in router.cards.values()],
        "queues": queue_report(router),
    }
