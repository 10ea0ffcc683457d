"""The image job queue: persistent, shared by replicas, with progress, cancel and failover.

A job is a row in the store from the moment it is accepted (`submit` returns its id at
once), so it survives a restart. Each replica runs one dispatcher: it takes the oldest
queued jobs, picks for each a `comfyui` backend that serves the model, is up and has
room (`concurrency` prompts at once), claims the row (owner and lease, and the prompt
id it is about to use), and starts a runner. The runner makes room on the GPU,
submits the bound graph under that prompt id, follows the prompt on the backend's
WebSocket (falling back to /queue and /history when the socket is quiet or down),
and when ComfyUI is done fetches the images, stores them, and finishes the row.

What can go wrong, and what happens:
- the backend cannot be reached (at submit, or while the prompt waits or runs): the
  job goes back to the queue, for another backend that has the model, or for this one
  when it answers again; its previous prompt id is kept, so whoever takes it next asks
  that backend first whether the prompt is still there (adopting it, not running it
  twice);
- the gateway stops or dies: queued jobs stay queued; submitted and running ones are
  adopted after the restart (at once: the owner name is the same) or by another
  replica once the lease runs out, and reconciled from /queue and /history;
- cancel: a job still in our queue is cancelled on the spot; one in ComfyUI's queue is
  removed from it; a running one is interrupted only if it is the one running
  (ComfyUI's targeted /interrupt).

Progress reaches this replica's listeners at once (`updates`); other replicas read it
from the store, where it is written at most twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.images import TERMINAL, ImageRequest
from aistack.images.dispatch import Dispatcher
from aistack.images.state import Live
from aistack.routing.catalog import Deployment
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord, JobRecord


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked for a job (from the request's key), kept on the job for the gallery."""

    key_id: str = ""
    app: str = ""
    end_user: str = ""


class ImageQueue(Dispatcher):
    # -- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._dispatch_loop(), name="images-dispatch")

    async def close(self) -> None:
        """Stop taking jobs; running ones stay with ComfyUI and are adopted after a restart."""
        self.closing = True
        tasks = [t for t in (self._loop, *self._runners.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        with contextlib.suppress(Exception):
            await self.db(self.table.release, self.s.owner)

    # -- the API

    def models(self) -> dict[str, list[Deployment]]:
        """Image models now: canonical name -> the comfyui deployments serving it."""
        out: dict[str, list[Deployment]] = {}
        for name in self.catalog.models():
            deps = [d for d in self.catalog.resolve(name) if d.backend.name in self.backends]
            if deps:
                out[name] = deps
        return out

    async def deployments(self, model: str) -> list[Deployment]:
        """The comfyui deployments of a model, or a 404 (a text model is a clear 400)."""
        deps = await self.catalog.lookup(model)
        image = [d for d in deps if d.backend.name in self.backends]
        if not image:
            raise invalid(
                f"'{model}' is not an image model; image models come from comfyui backends",
                "model",
            )
        return image

    async def submit(
        self,
        req: ImageRequest,
        who: Who,
        *,
        input_image: bytes | None = None,
        origin: dict[str, str] | None = None,
    ) -> JobRecord:
        """Queue a job; returns it at once (a 429 when the queue is full). `origin`
        (the request that made it: its id, its route) is kept with its parameters."""
        deps = await self.deployments(req.model)
        for d in deps:  # the workflows must be able to do what is asked
            self.backends[d.backend.name].workflow_for(d.model).check(req)
        if await self.db(self.table.count) >= self.s.queue_depth:
            raise GatewayError(
                ErrorKind.RATE_LIMITED,
                f"the image queue is full ({self.s.queue_depth} jobs waiting); try again later",
                code="queue_full",
                retry_after=10,
            )
        now = now_ms()
        jid = "imgjob_" + os.urandom(12).hex()
        params = {**req.params(), **(origin or {})}
        seed = req.seed if req.seed is not None else random.getrandbits(32)
        job = JobRecord(
            id=jid, created_at=now, updated_at=now, state="queued", model=req.model, params=params,
            key_id=who.key_id, app=who.app, end_user=who.end_user, seed=seed,
        )  # fmt: skip
        if input_image is not None:
            rel = await asyncio.to_thread(self.results.save_input, jid, input_image)
            job = replace(job, input_image=rel)
        await self.db(self.table.insert, job)
        self._wake.set()
        return job

    async def get(self, job_id: str) -> JobRecord | None:
        live = self._live.get(job_id)
        if live is not None and job_id in self._runners:
            return live.job
        job: JobRecord | None = await self.db(self.table.get, job_id)
        return job

    async def position(self, job: JobRecord) -> int | None:
        if job.state != "queued":
            return None
        n: int = await self.db(self.table.ahead_of, job)
        return n

    async def updates(self, job_id: str, poll: float = 1.0) -> AsyncIterator[JobRecord]:
        """The job now, then every change, until it ends. Jobs this replica runs are
        followed as they change; others are read from the store every `poll` seconds."""
        last: JobRecord | None = None
        live = self._live.get(job_id)
        if live is None:
            live = self._live[job_id] = Live(JobRecord("", 0, 0, "", "", {}))
            live.job = await self.db(self.table.get, job_id) or live.job
        try:
            while True:
                changed = live.changed
                if job_id not in self._runners:
                    fresh: JobRecord | None = await self.db(self.table.get, job_id)
                    if fresh is None:
                        return
                    live.job = fresh
                job = live.job
                if job != last:
                    yield job
                    last = job
                if job.state in TERMINAL:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await changed.wait()
        finally:
            if job_id not in self._runners and self._live.get(job_id) is live:
                self._live.pop(job_id, None)

    async def wait(self, job_id: str) -> JobRecord:
        job = None
        async for seen in self.updates(job_id):
            job = seen
        if job is None:
            raise GatewayError(ErrorKind.NOT_FOUND, f"no image job '{job_id}'")
        return job

    async def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job; returns it as it ended (or None if there is no such job)."""
        job = await self.get(job_id)
        if job is None or job.state in TERMINAL:
            return job
        now = now_ms()
        if job.state == "queued" and await self.db(self.table.cancel_unclaimed, job_id, now):
            self._finished_locally(job_id)
            return await self.get(job_id)
        await self.db(self.table.request_cancel, job_id)
        ev = self._cancels.get(job_id)
        if ev is not None:
            ev.set()  # our runner does the rest
        else:
            # Another replica runs it (or is about to submit it): remove it from ComfyUI
            # here; its owner sees the prompt gone or interrupted and ends the job.
            fresh = await self.db(self.table.get, job_id)
            if fresh is not None and fresh.backend in self.backends and fresh.prompt_id:
                await self._stop_prompt(self.backends[fresh.backend], fresh.prompt_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                return await self.wait(job_id)
        return await self.get(job_id)

    async def files(self, job_ids: list[str]) -> dict[str, list[FileRecord]]:
        out: dict[str, list[FileRecord]] = await self.db(self.table.files_of, job_ids)
        return out
