"""One image job's life on a ComfyUI backend: submit the bound graph (or adopt a prompt
that is still there), follow it to its end, collect and store the images, and finish the
row; a backend that goes away sends the job back to the queue (images/queue.py tells
the whole story)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aistack.backends.comfyui import ComfyUIBackend
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.images import TERMINAL, ImageEvent, ImageRequest, OutputRef, can_move
from aistack.dialects import comfyui as wire
from aistack.images.state import Live, QueueState
from aistack.routing.catalog import Deployment
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord, JobRecord

log = logging.getLogger("aistack.images")

# Failures that mean "the backend is not there", as opposed to "it refused this job".
_GONE = (ErrorKind.UPSTREAM_UNREACHABLE, ErrorKind.UPSTREAM_TIMEOUT)
PROGRESS_WRITE_EVERY = 0.5  # seconds between progress writes to the store


class JobRunner(QueueState):
    """Runs the jobs the dispatcher (images/dispatch.py) claims, one task each."""

    if TYPE_CHECKING:

        async def get(self, job_id: str) -> JobRecord | None: ...  # the queue's (queue.py)

    def _set(self, job: JobRecord) -> None:
        live = self._live.get(job.id)
        if live is None:
            self._live[job.id] = Live(job)
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

    async def _progress(self, live: Live, ev: ImageEvent) -> None:
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

    async def _down(self, b: ComfyUIBackend) -> None:
        if self.monitor is not None:
            self._probed[b.name] = time.monotonic()
            await self.monitor.probe(b)


def _check_move(job: JobRecord, dst: str) -> None:
    if job.state != dst and not can_move(job.state, dst):
        raise GatewayError(ErrorKind.INTERNAL, f"image job {job.id}: {job.state} -> {dst}")
