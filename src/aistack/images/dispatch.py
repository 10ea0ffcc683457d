"""The image queue's dispatcher: each round takes the oldest queued jobs, picks for each
a backend that serves the model, is up and has room, claims the row and starts a
runner (images/runner.py); it renews this replica's leases, passes on cancels asked
elsewhere and adopts orphaned jobs (images/queue.py tells the whole story)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from aistack.backends.comfyui import ComfyUIBackend
from aistack.core.images import TERMINAL
from aistack.dialects import comfyui as wire
from aistack.images.runner import JobRunner
from aistack.images.state import Live
from aistack.routing.catalog import Deployment
from aistack.store.calendar import now_ms
from aistack.store.job_records import JobRecord

log = logging.getLogger("aistack.images")


class Dispatcher(JobRunner):
    """Hands queued jobs to backends; one loop per replica."""

    async def _dispatch_loop(self) -> None:
        while not self.closing:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("image dispatch failed")
            wait = self.s.poll if (self._runners or self._wake.is_set()) else self.s.idle_poll
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _tick(self) -> None:
        now = now_ms()
        if time.monotonic() >= self._next_upkeep:
            self._next_upkeep = time.monotonic() + self.s.lease / 3
            await self._upkeep(now)
        self.depth = await self.db(self.table.count, ("queued", "submitted"))
        jobs: list[JobRecord] = await self.db(self.table.dispatchable, now, 100, self.s.owner)
        jobs = [j for j in jobs if j.id not in self._runners]  # ours, being submitted now
        if not jobs:
            return
        active: dict[str, int] = await self.db(self.table.active_by_backend, now)
        for j in jobs:  # our own claims from before a restart hold no place any more
            if j.owner == self.s.owner and j.lease_until >= now and j.backend in active:
                active[j.backend] -= 1
        for job in jobs:
            if job.cancel_requested:
                if await self.db(self.table.cancel_unclaimed, job.id, now):
                    self._finished_locally(job.id)
                continue
            if now - job.created_at > self.s.job_timeout * 1000:
                await self._end(job, "failed", "", error="the job waited too long for a backend")
                continue
            dep = await self._pick(job.model, active)
            if dep is None:
                continue
            b = dep.backend
            prompt_id = f"{job.id}-{job.attempts + 1}"
            lease = now + int(self.s.lease * 1000)
            if not await self.db(self.table.claim, job.id, self.s.owner, b.name, prompt_id,
                                 lease, now):  # fmt: skip
                continue
            active[b.name] = active.get(b.name, 0) + 1
            claimed = replace(job, owner=self.s.owner, backend=b.name, prompt_id=prompt_id,
                              attempts=job.attempts + 1, lease_until=lease)  # fmt: skip
            previous = (job.backend, job.prompt_id) if job.prompt_id else None
            self._start_runner(claimed, dep, previous)

    async def _pick(self, model: str, active: dict[str, int]) -> Deployment | None:
        best: Deployment | None = None
        best_load = 1 << 30
        for d in self.catalog.resolve(model):
            b = self.backends.get(d.backend.name)
            if b is None or b is not d.backend:
                continue
            h = self.health.get(b.name)
            if h is not None and not h.up:
                await self._reprobe(b)
                if not h.up:
                    continue
            load = active.get(b.name, 0)
            if load >= self.s.concurrency.get(b.name, 1):
                continue
            if load < best_load:
                best, best_load = d, load
        return best

    async def _reprobe(self, b: ComfyUIBackend) -> None:
        """A backend that was down: ask again now and then, so waiting jobs move on."""
        if self.monitor is None or time.monotonic() - self._probed.get(b.name, 0.0) < 5.0:
            return
        self._probed[b.name] = time.monotonic()
        if await self.monitor.probe(b):
            await self._clean_stale(b)

    async def _clean_stale(self, b: ComfyUIBackend) -> None:
        """Prompts we moved elsewhere while this backend was away: stop them if it still
        has them, so a job's work is not done twice."""
        mine = [p for name, p in self._stale if name == b.name]
        if not mine:
            return
        self._stale = [(n, p) for n, p in self._stale if n != b.name]
        for p in mine:
            await self._stop_prompt(b, p)

    async def _upkeep(self, now: int) -> None:
        """Renew our leases, pass on cancels asked elsewhere, adopt orphaned jobs."""
        lease = now + int(self.s.lease * 1000)
        mine: list[tuple[str, bool]] = await self.db(self.table.renew, self.s.owner, lease)
        for jid, cancel in mine:
            if cancel and jid in self._cancels:
                self._cancels[jid].set()
        for name in {n for n, _ in self._stale}:
            h = self.health.get(name)
            if h is not None and h.up and name in self.backends:
                await self._clean_stale(self.backends[name])
        for job in await self.db(self.table.adoptable, self.s.owner, now):
            if job.id in self._runners or job.backend not in self.backends:
                continue
            if not await self.db(self.table.adopt, job.id, self.s.owner, lease, now):
                continue
            b = self.backends[job.backend]
            dep = next((d for d in self.catalog.resolve(job.model) if d.backend is b), None)
            log.info("image job %s: adopted (%s on %s)", job.id, job.state, job.backend)
            self._start_runner(replace(job, owner=self.s.owner, lease_until=lease),
                               dep or Deployment(b, job.model, wire.image_card(job.model, b.name)),
                               None, adopted=True)  # fmt: skip

    def _start_runner(
        self,
        job: JobRecord,
        dep: Deployment,
        previous: tuple[str, str] | None,
        adopted: bool = False,
    ) -> None:
        b = dep.backend
        assert isinstance(b, ComfyUIBackend)
        live = self._live.get(job.id)
        if live is None:
            live = self._live[job.id] = Live(job)
        else:
            live.set(job)
        self._cancels[job.id] = asyncio.Event()
        if job.cancel_requested:
            self._cancels[job.id].set()
        self.active[b.name] = self.active.get(b.name, 0) + 1
        task = asyncio.create_task(self._run(job, dep, b, previous, adopted),
                                   name=f"image-job-{job.id}")  # fmt: skip
        self._runners[job.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._runners.pop(job.id, None)
            self._cancels.pop(job.id, None)
            n = self.active.get(b.name, 1) - 1
            self.active[b.name] = n
            if n <= 0 and not self.closing:
                self.gpu.idle(b)
            if not self.closing:
                self._wake.set()
            lv = self._live.get(job.id)
            if lv is not None and lv.job.state in TERMINAL:
                # Keep the final record a moment for late readers; the store has it.
                asyncio.get_running_loop().call_later(60, self._live.pop, job.id, None)

        task.add_done_callback(done)
