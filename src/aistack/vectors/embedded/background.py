"""The embedded engine's background work: flushing written shards, and building a
collection's index in another process.

qdrant-edge-py keeps the GIL for the whole of every call (building the HNSW index of
10k 384-d points takes 16-20 s on these machines), so the index is never built in
this process: a flushed copy of the shard is optimized by `python -m
aistack.vectors.optimize` while the engine keeps serving reads and writes on the
original (the writes are also kept in a replay list); then the optimized copy is
swapped in and the writes made meanwhile are applied to it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import qdrant_edge as q

from aistack.vectors.embedded.shards import Collection, Shards

log = logging.getLogger("aistack.vectors")

T = TypeVar("T")


class Runner(Protocol):
    """Runs a function on the engine's worker thread."""

    def __call__(self, fn: Callable[[], T]) -> Awaitable[T]: ...


def unindexed(c: Collection) -> int:
    info = c.shard.info()
    dense = max(1, len(c.vectors()))
    n: int = info.points_count * dense - info.indexed_vectors_count
    return max(0, n) + c.deleted


class Background:
    def __init__(
        self,
        shards: Shards,
        run: Runner,
        *,
        flush_interval: float,
        optimize_threshold: int,
        optimize_idle: float,
    ) -> None:
        self.shards = shards
        self.run = run
        self.flush_interval = flush_interval
        self.optimize_threshold = optimize_threshold
        self.optimize_idle = optimize_idle
        self._tasks: list[asyncio.Task[None]] = []
        self._optimizations: set[asyncio.Task[bool]] = set()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="vectors-flush"))
        if self.optimize_threshold > 0:
            self._tasks.append(asyncio.create_task(self._optimize_loop(), name="vectors-optimize"))

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._optimizations]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.run(self.shards.flush_written)
            except Exception:
                log.exception("vectors: flush failed")

    async def _optimize_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.optimize_idle, 5.0) or 1.0)
            now = time.time()
            for c in list(self.shards.cols.values()):
                if c.optimizing or now - c.written_at < self.optimize_idle:
                    continue
                n = await self.run(lambda c=c: unindexed(c))  # type: ignore[misc]
                if n >= self.optimize_threshold and n != c.last_optimized:
                    c.optimizing = True
                    t = asyncio.create_task(self.optimize(c.name), name=f"vectors-opt-{c.name}")
                    self._optimizations.add(t)
                    t.add_done_callback(self._optimizations.discard)

    async def optimize(self, name: str) -> bool:
        """Build the collection's index in another process and swap it in; whether it
        was swapped in."""
        c = self.shards.cols.get(name)
        if c is None:
            return False
        c.optimizing = True
        work = c.dir / "optimizing"
        try:
            c.last_optimized = await self.run(lambda: unindexed(c))

            def copy() -> None:
                shutil.rmtree(work, ignore_errors=True)
                c.shard.flush()
                shutil.copytree(c.shard_dir, work)
                c.replay = []

            await self.run(copy)
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aistack.vectors.optimize", str(work),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                _, err = await proc.communicate()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode != 0:
                log.warning("vectors: optimizing %s failed: %s", name, err.decode()[-500:])
                return False
            if self.shards.cols.get(name) is not c or c.replay is None:
                return False  # dropped, replaced or over the replay limit meanwhile

            def swap() -> int:
                assert c.replay is not None
                old = c.dir / "shard.old"
                c.shard.close()
                c.shard_dir.rename(old)
                work.rename(c.shard_dir)
                c.shard = q.EdgeShard.load(str(c.shard_dir))
                for op in c.replay:
                    c.shard.update(op)
                n = len(c.replay)
                c.replay = None
                c.deleted = 0
                shutil.rmtree(old, ignore_errors=True)
                return n

            replayed = await self.run(swap)
            log.info(
                "vectors: indexed %s in %.1f s in the background (%d writes replayed)",
                name, time.monotonic() - started, replayed,
            )  # fmt: skip
            return True
        finally:
            c.replay = None
            c.optimizing = False
            shutil.rmtree(work, ignore_errors=True)
