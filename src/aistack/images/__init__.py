"""Image generation: ComfyUI behind the OpenAI images API, as a persistent job queue.

`queue.py` runs the jobs (dispatch, progress, cancel, failover, restarts), `workflows.py`
turns a request into a ComfyUI graph, `results.py` keeps the images, `gpu.py` lets text
and image models take turns on one card, and `Images` here holds them together with
retention. The wire stays in `dialects/comfyui.py` and `backends/comfyui.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aistack.images.queue import ImageQueue, QueueSettings, Who
from aistack.store.base import now_ms
from aistack.store.jobs import FileRecord

__all__ = ["ImageQueue", "Images", "QueueSettings", "Retention", "Who"]

log = logging.getLogger("aistack.images")


@dataclass(frozen=True, slots=True)
class Retention:
    days: float = 30.0  # images older than this are deleted (0: kept for ever)
    max_bytes: int = 10 << 30  # then the oldest, until the total is under this (0: no cap)
    every: float = 3600.0  # seconds between rounds


class Images:
    """What the gateway holds: the queue, and retention of what it made."""

    def __init__(self, queue: ImageQueue, retention: Retention = Retention()) -> None:
        self.queue = queue
        self.retention = retention
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.queue.start()
        self._task = asyncio.create_task(self._prune_loop(), name="images-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.queue.close()

    async def _prune_loop(self) -> None:
        while True:
            try:
                files, jobs = await self.prune()
                if files or jobs:
                    log.info("image retention: removed %d images and %d jobs", files, jobs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("image retention failed")
            await asyncio.sleep(self.retention.every)

    async def prune(self, now: int | None = None) -> tuple[int, int]:
        """One retention round: (images removed, jobs removed)."""
        q, t, r = self.queue, self.queue.table, self.retention
        now = now if now is not None else now_ms()
        removed = 0
        cutoff = now - int(r.days * 86_400_000) if r.days > 0 else None
        if cutoff is not None:
            while True:
                old: list[FileRecord] = await q.db(t.oldest_files, 500, cutoff)
                if not old:
                    break
                await self._drop(old)
                removed += len(old)
        if r.max_bytes > 0:
            while await q.db(t.file_bytes) > r.max_bytes:
                oldest: list[FileRecord] = await q.db(t.oldest_files, 50)
                if not oldest:
                    break
                await self._drop(oldest)
                removed += len(oldest)
        jobs = 0
        if cutoff is not None:
            for jid in await q.db(t.finished_without_files, cutoff):
                await q.db(t.delete, jid)
                jobs += 1
        return removed, jobs

    async def _drop(self, files: list[FileRecord]) -> None:
        await self.queue.db(self.queue.table.delete_files, [f.id for f in files])
        await asyncio.to_thread(self.queue.results.unlink, files)
