"""Text and images taking turns on one card: the backends of a `gpu:` group.

Before a ComfyUI job runs on a group, the group's Ollama instances are asked which
models they hold (`/api/ps`) and every one is unloaded (`keep_alive: 0`) through the
router (`Router.unload`), which refuses while a request runs on it there and holds new
requests for it during the unload; a model that is answering someone stays. After a
ComfyUI backend has had no job for `free_after` seconds it is asked to `/free` its
models, so the next text request finds the memory. Both are best effort: a box that
does not answer is logged and skipped, and the job runs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aistack.backends.base import Backend, LoadedModels, ModelMemory
from aistack.backends.comfyui import ComfyUIBackend
from aistack.core.errors import GatewayError

log = logging.getLogger("aistack.images.gpu")


@dataclass(slots=True)
class GpuSharing:
    groups: dict[str, list[Backend]]  # gpu group -> the backends on that card
    unload: Callable[[str, str], Awaitable[bool]]  # (backend, model): False while it runs
    free_after: dict[str, float | None] = field(default_factory=dict)  # comfy -> seconds
    unloaded: list[tuple[str, str]] = field(default_factory=list)  # (backend, model), recent
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def of(
        cls,
        backends: Sequence[Backend],
        gpu: dict[str, str],
        unload: Callable[[str, str], Awaitable[bool]],
        free_after: dict[str, float | None],
    ) -> GpuSharing:
        groups: dict[str, list[Backend]] = {}
        for b in backends:
            g = gpu.get(b.name, "")
            if g:
                groups.setdefault(g, []).append(b)
        return cls(groups, unload, free_after)

    async def before(self, comfy: ComfyUIBackend) -> list[tuple[str, str]]:
        """Make room on the card for a ComfyUI job: unload the group's idle text models."""
        self.busy(comfy)
        done: list[tuple[str, str]] = []
        for b in self.groups.get(comfy.gpu, []) if comfy.gpu else []:
            if b is comfy or not isinstance(b, LoadedModels) or not isinstance(b, ModelMemory):
                continue
            try:
                loaded = await b.ps()
            except GatewayError as e:
                log.warning("gpu %s: cannot ask %s what it holds: %s", comfy.gpu, b.name, e.message)
                continue
            for m in loaded:
                try:
                    if not await self.unload(b.name, m.name):
                        log.info("gpu %s: %s keeps %s loaded (a request is running on it)",
                                 comfy.gpu, b.name, m.name)  # fmt: skip
                        continue
                except GatewayError as e:
                    log.warning("gpu %s: unloading %s from %s failed: %s",
                                comfy.gpu, m.name, b.name, e.message)  # fmt: skip
                    continue
                log.info("gpu %s: unloaded %s from %s for an image job", comfy.gpu, m.name, b.name)
                done.append((b.name, m.name))
        self.unloaded = (self.unloaded + done)[-100:]
        return done

    def busy(self, comfy: ComfyUIBackend) -> None:
        t = self._timers.pop(comfy.name, None)
        if t is not None:
            t.cancel()

    def idle(self, comfy: ComfyUIBackend) -> None:
        """The backend has no job now: free its memory if it stays that way."""
        after = self.free_after.get(comfy.name)
        if not after or after <= 0:
            return
        self.busy(comfy)
        loop = asyncio.get_running_loop()
        self._timers[comfy.name] = loop.call_later(after, self._free, comfy)

    def _free(self, comfy: ComfyUIBackend) -> None:
        self._timers.pop(comfy.name, None)

        async def free() -> None:
            try:
                await comfy.free()
                log.info("gpu %s: freed %s's models after %gs idle", comfy.gpu or "-", comfy.name,
                         self.free_after.get(comfy.name) or 0)  # fmt: skip
            except GatewayError as e:
                log.warning("freeing %s's models failed: %s", comfy.name, e.message)

        task = asyncio.get_running_loop().create_task(free())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
