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
from collections.abc import Sequence
from typing import Any

from aistack.backends.base import Backend
from aistack.core.errors import GatewayError
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
    ) -> None:
        self.backends = list(backends)
        self.router = router
        self.interval = interval
        self.timeout = timeout
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.interval <= 0:
            return
        for b in self.backends:
            if b.probes:
                self._tasks.append(asyncio.create_task(self._watch(b), name=f"probe-{b.name}"))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

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
        return True


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def backend_report(h: BackendHealth) -> dict[str, Any]:
    return {
        "name": h.name,
        "kind": h.kind,
        "state": ("up" if h.up else "down") if h.probed else ("up" if h.up else "unknown"),
        "probed": h.probed,
        "latency_ms": _ms(h.latency),
        "error": h.error or None,
        "checked_at": h.checked_at or None,
    }


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
        "backends": [backend_report(h) for h in router.health.values()],
        "deployments": deployments,
    }
