"""What the image queue's parts share: its settings, the jobs this replica is watching,
and the queue's state (the store, the backends, the runners). The story of the queue is
in images/queue.py; images/dispatch.py hands jobs to backends, images/runner.py runs one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aistack.backends.comfyui import ComfyUIBackend
from aistack.images.gpu import GpuSharing
from aistack.images.results import Results
from aistack.routing.catalog import Catalog
from aistack.routing.health import HealthMonitor
from aistack.routing.state import BackendHealth
from aistack.store.base import Store
from aistack.store.job_records import FileRecord, JobRecord
from aistack.store.jobs import JobTable

log = logging.getLogger("aistack.images")


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


class Live:
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


class QueueState:
    """The queue's state, made once; the dispatcher, the runners and the API share it."""

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
        self._live: dict[str, Live] = {}
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
