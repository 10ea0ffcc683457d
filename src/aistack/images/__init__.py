"""Image generation: ComfyUI behind the OpenAI images API, as a persistent job queue.

A room of its own (added in aistack/rooms.py). Its routes: routes.py makes images,
job_routes.py reads and changes jobs, files and presets. `queue.py` runs the jobs (its
API: submit, follow, cancel; the story of failover and restarts) on `dispatch.py` (jobs
to backends, leases, adoption), `runner.py` (one job on ComfyUI: submit, follow,
collect) and `state.py` (what they share); `results.py` keeps the images, `gpu.py` lets
text and image models take turns on one card, and `Images` here holds them together
with retention. Workflows and the wire are the backend's (backends/comfyui.py,
dialects/comfyui.py); the OpenAI side is dialects/openai/images.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from aistack.access.sessions import Sessions
from aistack.backends.comfyui import ComfyConfig, ComfyUIBackend
from aistack.core.errors import ErrorKind, GatewayError
from aistack.http.asgi import Request
from aistack.http.table import POST, PUBLIC, Route
from aistack.images.gpu import GpuSharing
from aistack.images.metrics import ImageMetrics
from aistack.images.queue import ImageQueue, Who
from aistack.images.results import Results
from aistack.images.routes import ImageRoutes
from aistack.images.state import QueueSettings
from aistack.observability import Observability
from aistack.service import Gateway, RequestContext
from aistack.store import Store, default_sqlite_path, open_store
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord

__all__ = ["ImageQueue", "Images", "QueueSettings", "Retention", "Who", "routes"]

log = logging.getLogger("aistack.images")


@dataclass(frozen=True, slots=True)
class Retention:
    days: float = 30.0  # images older than this are deleted (0: kept for ever)
    max_bytes: int = 10 << 30  # then the oldest, until the total is under this (0: no cap)
    every: float = 3600.0  # seconds between rounds


class Images:
    """What the gateway holds: the queue, and retention of what it made."""

    def __init__(
        self, queue: ImageQueue, retention: Retention = Retention(), own_store: bool = False
    ) -> None:
        self.queue = queue
        self.retention = retention
        self.own_store = own_store  # opened for the images (a gateway without keys)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.own_store and self.queue.store.kind == "sqlite":
            await self.queue.store.run(self.queue.store.migrate)
        await self.queue.start()
        self._task = asyncio.create_task(self._prune_loop(), name="images-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.queue.close()
        await self.queue.gpu.close()
        if self.own_store:
            await self.queue.store.aclose()

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
            total: int = await q.db(t.file_bytes)
            while total > r.max_bytes:
                oldest: list[FileRecord] = await q.db(t.oldest_files, 100)
                if not oldest:
                    break
                drop: list[FileRecord] = []
                for f in oldest:  # the oldest, until the rest fits
                    if total <= r.max_bytes:
                        break
                    drop.append(f)
                    total -= f.bytes
                await self._drop(drop)
                removed += len(drop)
        jobs = 0
        if cutoff is not None:
            for jid in await q.db(t.finished_without_files, cutoff):
                await q.db(t.delete, jid)
                jobs += 1
        return removed, jobs

    async def _drop(self, files: list[FileRecord]) -> None:
        await self.queue.db(self.queue.table.delete_files, [f.id for f in files])
        await asyncio.to_thread(self.queue.results.unlink, files)


def _storage(configured: str | None, store: Store) -> Path:
    if configured:
        return Path(configured)
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return path.parent / "images"
    return default_sqlite_path().parent / "images"


def build(gw: Gateway) -> Images | None:
    """The images room for this gateway: None when no backend is a comfyui one."""
    comfy = {n: b for n, b in gw.backends.items() if isinstance(b, ComfyUIBackend)}
    if not comfy:
        return None
    cfg = gw.config
    im = cfg.images
    store = gw.gate.store if gw.gate is not None else open_store(cfg.database_url)
    by_name = {c.name: c for c in cfg.backends}
    gpu = {c.name: c.gpu for c in cfg.backends if c.gpu}
    free_after: dict[str, float | None] = {}
    for name in comfy:
        c = by_name.get(name)
        given = c.free_after if isinstance(c, ComfyConfig) else None
        free_after[name] = (
            given if given is not None else (im.free_after if gpu.get(name) else None)
        )
    settings = QueueSettings(
        owner=f"{socket.gethostname()}:{cfg.server.port}",
        concurrency={n: (by_name[n].max_in_flight or 1) if n in by_name else 1 for n in comfy},
        queue_depth=im.queue_depth,
        lease=im.lease,
        job_timeout=im.job_timeout,
    )
    queue = ImageQueue(
        store,
        gw.catalog,
        gw.router.health,
        comfy,
        Results(_storage(im.storage, store)),
        GpuSharing.of(list(gw.backends.values()), gpu, gw.router.unload, free_after),
        settings,
        gw.health,
    )
    retention = Retention(im.retention_days, int(im.max_gb * (1 << 30)))
    return Images(queue, retention, own_store=gw.gate is None)


async def _no_images(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    raise GatewayError(
        ErrorKind.NOT_FOUND,
        "this gateway has no image models: add a comfyui backend (docs/images.md)",
        param="model",
        code="model_not_found",
    )


def routes(gw: Gateway, sessions: Sessions | None, obs: Observability | None = None) -> list[Route]:
    """The room's entries; its runtime joins the gateway's components (started and
    closed with it), its jobs the ledger and `obs`'s metrics."""
    images = build(gw)
    if images is None:
        return [Route(POST, "/v1/images/{rest:path}", _no_images, "openai", PUBLIC,
                      name="images_none")]  # fmt: skip
    gw.components.append(images)
    im = gw.config.images
    r = ImageRoutes(images.queue, sessions, public_url=gw.config.server.public_url,
                    timeout=im.timeout, default_model=im.default_model or "")  # fmt: skip
    images.queue.on_finished.append(lambda job, files: r.record(gw, job, files))
    if obs is not None and obs.metrics is not None:
        ImageMetrics(obs.metrics.registry, images.queue)
    return r.routes()
