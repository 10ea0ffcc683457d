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
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aistack.backends.comfyui import ComfyUIBackend
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.images import TERMINAL, ImageEvent, ImageRequest, OutputRef, can_move
from aistack.dialects import comfyui as wire
from aistack.images.gpu import GpuSharing
from aistack.images.results import Results
from aistack.routing.catalog import Catalog, Deployment
from aistack.routing.health import HealthMonitor
from aistack.routing.state import BackendHealth
from aistack.store.base import Store
from aistack.store.calendar import now_ms
from aistack.store.jobs import FileRecord, JobRecord, JobTable

log = logging.getLogger("aistack.images")

# Failures that mean "the backend is not there", as opposed to "it refused this job".
_GONE = (ErrorKind.UPSTREAM_UNREACHABLE, ErrorKind.UPSTREAM_TIMEOUT)
PROGRESS_WRITE_EVERY = 0.5  # seconds between progress writes to the store


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked for a job (from the request's key), kept on the job for the gallery."""

    key_id: str = ""
    app: str = ""
    end_user: str = ""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    owner: str  # this replica's name: the same across its restarts
    concurrency: dict[str, int] = field(default_factory=dict)  # backend -> prompts at once
    queue_depth: int = 100  # queued jobs at most; more get a 429
    lease: float = 30.0  # seconds a claim lasts without renewal
    poll: float = 1.0  # seconds between dispatch rounds while jobs are about
    idle_poll: float = 5.0  # ... and while there are none (other replicas may add some)
    check_every: float = 2.0  # seconds between liveness checks of a quiet prompt
    job_timeout: float = 3600.0  # a job not finished this long after it was queued fails
    lost_after: int = 2  # failed liveness checks in a row before a job moves on


class _Live:
    """A job this replica is watching: its latest record and who waits for changes."""

    __slots__ = ("changed", "job", "last_write")

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.changed = asyncio.Event()
        self.last_write = 0.0

    def set(self, job: JobRecord) -> None:
        self.job = job
        self.changed.set()
        self.changed = asyncio.Event()


class ImageQueue:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        health: dict[str, BackendHealth],
        backends: dict[str, ComfyUIBackend],
        results: Results,
        gpu: GpuSharing,
        settings: QueueSettings,
        monitor: HealthMonitor | None = None,
    ) -> None:
        self.store = store
        self.table = JobTable(store)
        self.catalog = catalog
        self.health = health
        self.backends = backends
        self.results = results
        self.gpu = gpu
        self.s = settings
        self.monitor = monitor
        self._live: dict[str, _Live] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self.active: dict[str, int] = {}  # backend -> our runners on it
        self.depth = 0  # jobs waiting (ours, or a backend's not yet started), as last counted
        self._cancels: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._next_upkeep = 0.0
        self._probed: dict[str, float] = {}
        self._stale: list[tuple[str, str]] = []  # (backend, prompt id) we moved away from
        self.closing = False
        # Called with every job that ends (the ledger, metrics); must not block.
        self.on_finished: list[Callable[[JobRecord, list[FileRecord]], None]] = []
        for b in backends.values():
            # The same name after a restart: ComfyUI sends a prompt's events to the
            # socket of the client that submitted it (one per backend: two backends may
            # be one ComfyUI, and a client id has one socket there).
            b.set_client_id(f"aistack-{settings.owner}-{b.name}")

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if kw:
            return await self.store.run(lambda: fn(*args, **kw))
        return await self.store.run(fn, *args)

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
            live = self._live[job_id] = _Live(JobRecord("", 0, 0, "", "", {}))
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

    # -- dispatch

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

    async def _down(self, b: ComfyUIBackend) -> None:
        if self.monitor is not None:
            self._probed[b.name] = time.monotonic()
            await self.monitor.probe(b)

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
            live = self._live[job.id] = _Live(job)
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

    # -- one job

    def _set(self, job: JobRecord) -> None:
        live = self._live.get(job.id)
        if live is None:
            self._live[job.id] = _Live(job)
        else:
            live.set(job)

    def _finished_locally(self, job_id: str) -> None:
        """A job ended without a runner (a cancel in the queue): readers re-read it."""
        live = self._live.pop(job_id, None)
        if live is not None:
            live.changed.set()

    async def _move(self, job: JobRecord, dst: str, **changes: Any) -> JobRecord | None:
        """Move our job on; None when it is no longer ours (another replica took it)."""
        _check_move(job, dst)
        ok = await self.db(self.table.move, job.id, self.s.owner, [job.state], dst, **changes)
        if not ok:
            log.warning("image job %s: no longer ours to move to %s", job.id, dst)
            return None
        new = replace(job, state=dst, updated_at=now_ms(), **changes)
        self._set(new)
        return new

    async def _end(
        self, job: JobRecord, state: str, owner: str, files: list[FileRecord] | None = None,
        **changes: Any,
    ) -> JobRecord | None:  # fmt: skip
        _check_move(job, state)
        now = now_ms()
        changes.setdefault("finished_at", now)
        ok = await self.db(self.table.move, job.id, owner, [job.state], state, **changes)
        if not ok:
            return None
        new = replace(job, state=state, updated_at=now, **changes)
        self._set(new)
        if job.input_image:
            self.results.drop_input(job.input_image)
        for fn in self.on_finished:
            try:
                fn(new, files or [])
            except Exception:
                log.exception("an image job observer failed")
        if state == "failed":
            log.warning("image job %s failed: %s", job.id, new.error)
        return new

    async def _run(
        self,
        job: JobRecord,
        dep: Deployment,
        b: ComfyUIBackend,
        previous: tuple[str, str] | None,
        adopted: bool,
    ) -> None:
        try:
            await self._run_inner(job, dep, b, previous, adopted)
        except asyncio.CancelledError:
            raise
        except GatewayError as e:
            await self._fail(job, e.message)
        except Exception as e:
            log.exception("image job %s", job.id)
            await self._fail(job, f"internal error: {type(e).__name__}")

    async def _fail(self, job: JobRecord, message: str) -> None:
        cur = await self.get(job.id)
        if cur is not None and cur.state not in TERMINAL:
            await self._end(cur, "failed", self.s.owner, error=message[:1000])

    async def _run_inner(
        self,
        job: JobRecord,
        dep: Deployment,
        b: ComfyUIBackend,
        previous: tuple[str, str] | None,
        adopted: bool,
    ) -> None:
        events: asyncio.Queue[ImageEvent] = asyncio.Queue()
        if previous is not None and previous[0] in self.backends:
            # Taken up again after a stop: the previous backend may still have the prompt.
            pb = self.backends[previous[0]]
            where = await self._find(pb, previous[1])
            if where is not None:
                log.info("image job %s: found %s still on %s (%s)", job.id, previous[1],
                         pb.name, where)  # fmt: skip
                job = await self._restore(job, pb.name, previous[1], where)
                b = pb
                adopted = True
        pid = job.prompt_id
        b.listen(pid, events.put_nowait)
        try:
            if not adopted:
                cur = await self._submit(job, dep, b)
                if cur is None:
                    return
                job = cur
            await self._follow(job, b, events)
        finally:
            b.unlisten(pid)

    async def _restore(self, job: JobRecord, backend: str, pid: str, where: str) -> JobRecord:
        state = "submitted" if where == "pending" else "running"
        ok = await self.db(self.table.move, job.id, self.s.owner, ["queued"], state,
                           backend=backend, prompt_id=pid)  # fmt: skip
        if not ok:
            raise GatewayError(ErrorKind.INTERNAL, "the job changed while being restored")
        new = replace(job, state=state, backend=backend, prompt_id=pid)
        self._set(new)
        return new

    async def _find(self, b: ComfyUIBackend, pid: str) -> str | None:
        """Where a prompt is on a backend: running, pending, done; None if not there."""
        try:
            running, pending = await b.queue()
            if pid in running:
                return "running"
            if pid in pending:
                return "pending"
            return "done" if await b.history(pid) is not None else None
        except GatewayError:
            return None

    async def _submit(self, job: JobRecord, dep: Deployment, b: ComfyUIBackend) -> JobRecord | None:
        req = ImageRequest.from_params(job.model, job.params)
        image_name = None
        try:
            await self.gpu.before(b)
            if job.input_image:
                data = self.results.read_input(job.input_image)
                if data is None:
                    raise GatewayError(ErrorKind.INTERNAL, "the job's input image is gone")
                image_name = await b.upload_image(data, f"{job.id}.png")
            seed = job.seed if job.seed is not None else 0
            graph = b.graph(dep.model, req, seed=seed, image_name=image_name,
                            prefix=f"aistack/{job.id}")  # fmt: skip
            await b.submit(graph, job.prompt_id)
        except GatewayError as e:
            if e.kind in _GONE:
                log.warning("image job %s: %s; back to the queue", job.id, e.message)
                await self._requeue(job, b)
                return None
            raise
        cur = await self._move(job, "submitted")
        if cur is not None and self._cancels[job.id].is_set():
            await self._stop_prompt(b, job.prompt_id)
        return cur

    async def _requeue(self, job: JobRecord, b: ComfyUIBackend) -> None:
        """The backend went away: the job waits in the queue for any backend again."""
        _check_move(job, "queued")
        ok = await self.db(self.table.move, job.id, self.s.owner, [job.state], "queued",
                           owner="", lease_until=0)  # fmt: skip
        if ok:
            self._set(replace(job, state="queued", owner="", lease_until=0))
            self._stale.append((b.name, job.prompt_id))
            self._stale = self._stale[-1000:]
        await self._down(b)
        self._wake.set()

    async def _stop_prompt(self, b: ComfyUIBackend, pid: str) -> None:
        try:
            await b.delete_pending([pid])
            await b.interrupt(pid)
        except GatewayError as e:
            log.warning("cannot stop prompt %s on %s: %s", pid, b.name, e.message)

    async def _follow(
        self, job: JobRecord, b: ComfyUIBackend, events: asyncio.Queue[ImageEvent]
    ) -> None:
        pid = job.prompt_id
        cancel = self._cancels[job.id]
        cancelling = False
        misses = 0
        started = time.monotonic()
        live = self._live[job.id]
        deadline = job.created_at / 1000 + self.s.job_timeout
        while True:
            ev: ImageEvent | None = None
            if cancel.is_set() and not cancelling:
                cancelling = True
                await self._stop_prompt(b, pid)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.s.check_every):
                        ev = await events.get()
            job = live.job
            if ev is not None:
                if ev.kind in ("started", "node", "progress"):
                    if job.state == "submitted":
                        started = time.monotonic()
                        cur = await self._move(job, "running", started_at=now_ms())
                        if cur is None:
                            return
                        job = cur
                    if ev.kind == "progress":
                        await self._progress(live, ev)
                    continue
                if ev.kind == "error":
                    await self._end(job, "failed", self.s.owner, error=ev.message[:1000])
                    return
                if ev.kind in ("done", "interrupted"):
                    await self._collect(job, b, started, cancelling)
                    return
                continue
            # Quiet: is the prompt still there?
            if time.time() > deadline:
                await self._stop_prompt(b, pid)
                why = f"the job ran out of time ({self.s.job_timeout:g}s)"
                await self._end(job, "failed", self.s.owner, error=why)
                return
            where = await self._where(b, pid)
            if where == "gone":
                misses += 1
                if misses >= self.s.lost_after:
                    log.warning("image job %s: backend %s is not answering; back to the queue",
                                job.id, b.name)  # fmt: skip
                    await self._requeue(job, b)
                    return
                continue
            misses = 0
            if where == "running" and job.state == "submitted":
                started = time.monotonic()
                await self._move(job, "running", started_at=now_ms())
            elif where == "done":
                await self._collect(job, b, started, cancelling)
                return
            elif where == "lost":
                if cancelling or cancel.is_set():
                    await self._end(job, "cancelled", self.s.owner)
                else:
                    log.warning("image job %s: backend %s lost prompt %s; back to the queue",
                                job.id, b.name, pid)  # fmt: skip
                    await self._requeue(job, b)
                return

    async def _where(self, b: ComfyUIBackend, pid: str) -> str:
        """running, pending, done, lost (the backend answers but has no such prompt), or
        gone (the backend does not answer). The queue is asked before the history: a
        prompt is always in one of them, and leaves the queue only into the history."""
        try:
            running, pending = await b.queue()
            if pid in running:
                return "running"
            if pid in pending:
                return "pending"
            return "done" if await b.history(pid) is not None else "lost"
        except GatewayError as e:
            if e.kind in _GONE:
                return "gone"
            raise

    async def _progress(self, live: _Live, ev: ImageEvent) -> None:
        job = replace(live.job, progress_value=ev.value, progress_max=ev.max, progress_node=ev.node)
        live.set(job)
        now = time.monotonic()
        if now - live.last_write >= PROGRESS_WRITE_EVERY or ev.value >= ev.max:
            live.last_write = now
            await self.db(self.table.update, job.id, self.s.owner, progress_value=ev.value,
                          progress_max=ev.max, progress_node=ev.node)  # fmt: skip

    async def _collect(
        self, job: JobRecord, b: ComfyUIBackend, started: float, cancelling: bool
    ) -> None:
        entry = None
        for _ in range(20):  # written just before `executing null`; a moment at most
            entry = await b.history(job.prompt_id)
            if entry is not None:
                break
            await asyncio.sleep(0.1)
        gpu_ms = round((time.monotonic() - started) * 1000, 1)
        if entry is None:
            await self._end(job, "failed", self.s.owner, error="ComfyUI kept no history of the job")
            return
        state, message, refs = wire.history_result(entry)
        if state == "cancelled" or (cancelling and state != "succeeded"):
            await self._end(job, "cancelled", self.s.owner, gpu_ms=gpu_ms)
            return
        if state == "failed":
            await self._end(job, "failed", self.s.owner, error=message[:1000], gpu_ms=gpu_ms)
            return
        if not refs:
            await self._end(job, "failed", self.s.owner, error="the workflow made no image",
                            gpu_ms=gpu_ms)  # fmt: skip
            return
        files = await self._store_images(job, b, refs)
        await self.db(self.table.add_files, files)
        await self._end(job, "succeeded", self.s.owner, files, gpu_ms=gpu_ms,
                        progress_value=job.progress_max or job.progress_value)  # fmt: skip

    async def _store_images(
        self, job: JobRecord, b: ComfyUIBackend, refs: list[OutputRef]
    ) -> list[FileRecord]:
        files: list[FileRecord] = []
        for i, ref in enumerate(refs):
            data = await b.view(ref)
            files.append(await asyncio.to_thread(self.results.save, job.id, i, data, job.key_id))
        return files


def _check_move(job: JobRecord, dst: str) -> None:
    if job.state != dst and not can_move(job.state, dst):
        raise GatewayError(ErrorKind.INTERNAL, f"image job {job.id}: {job.state} -> {dst}")
