"""The embedded engine: its worker thread, its lifecycle, and one operation's dispatch.

qdrant-edge-py keeps the GIL for the whole of every call (measured: a 10k-point upsert
holds it 0.6 s), so a call on the event loop or on any thread of this process stalls
the gateway for as long as it runs: every engine call runs on this engine's one worker
thread, never on the event loop thread, and large upserts go in slices so that no
single hold is long. The operations themselves are in catalog.py (collections,
aliases, indexes) and points.py; background.py flushes and builds indexes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as q

from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.qdrant import QDRANT_API_VERSION, Op, bad, update_result
from aistack.vectors import convert as cv
from aistack.vectors.embedded import catalog, points, snapshots
from aistack.vectors.embedded.background import Background
from aistack.vectors.embedded.shards import Collection, Shards, dir_size, guard
from aistack.vectors.engine import CollectionStats

log = logging.getLogger("aistack.vectors")

T = TypeVar("T")

SLICE = 256  # points per engine call in a large upsert: each holds the GIL ~15 ms

OPS: dict[str, Callable[..., Any]] = {**catalog.OPS, **points.OPS, **snapshots.OPS}


class EmbeddedEngine:
    kind = "embedded"

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 5.0,
        optimize_threshold: int = 20_000,
        optimize_idle: float = 10.0,
    ) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aistack-vectors")
        self.shards = Shards(path, flush_interval)
        self.background = Background(
            self.shards,
            self._run,
            flush_interval=flush_interval,
            optimize_threshold=optimize_threshold,
            optimize_idle=optimize_idle,
        )
        self._started = False
        self.error = ""

    # -- the worker thread

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    # -- lifecycle

    async def start(self) -> None:
        try:
            await self._run(self.shards.open_all)
        except Exception as e:
            self.error = f"cannot open the vector store at {self.path}: {e}"
            log.error("%s", self.error)
            return
        self._started = True
        self.background.start()

    async def close(self) -> None:
        await self.background.close()
        if self._started:
            await self._run(self.shards.close_all)
        self._pool.shutdown(wait=True)
        self._started = False

    async def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, self.error or "starting"
        return True, "ready"

    async def optimize(self, name: str) -> bool:
        """Build the collection's index in another process now (background.py)."""
        return await self.background.optimize(name)

    # -- the operations

    def resolve(self, name: str) -> str | None:
        """The collection a name or alias stands for, or None."""
        return self.shards.resolve(name)

    async def vector_sizes(self, collection: str) -> dict[str, int]:
        return self.shards.col(collection).vectors()

    async def call(
        self, op: Op, collection: str, arg: str, body: dict[str, Any], params: dict[str, str]
    ) -> Any:
        if op.name == "root":
            return {"title": "qdrant - vector search engine", "version": QDRANT_API_VERSION}
        if not self._started:
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR, self.error or "the vector store is starting"
            )
        if op.name == "upsert":
            return await self._upsert_sliced(collection, body)
        fn = OPS.get(op.name)
        if fn is None:
            raise bad(f"{op.name} is not supported by the embedded engine")
        s = self.shards
        return await self._run(lambda: guard(fn, s, collection, arg, body, params))

    async def _upsert_sliced(self, name: str, body: dict[str, Any]) -> Any:
        s = self.shards
        c: Collection = await self._run(lambda: s.col(name))

        def build() -> list[q.Point]:
            points.check_dims(c, body)
            return cv.points_in(body)

        pts = await self._run(lambda: guard(build))
        for i in range(0, len(pts), SLICE):
            part = pts[i : i + SLICE]

            def write(part: list[q.Point] = part) -> None:
                c.update(q.UpdateOperation.upsert_points(part))

            await self._run(lambda: guard(write))
            s.over_replay(c)
        return update_result(s.next_op())

    # -- operations for the CLI, metrics and the console

    async def stats(self) -> list[CollectionStats]:
        def collect() -> list[CollectionStats]:
            out = []
            for c in self.shards.cols.values():
                info = c.shard.info()
                out.append(
                    CollectionStats(
                        c.name,
                        info.points_count,
                        c.vectors(),
                        dir_size(c.dir),
                        c.written_at or None,
                        info.segments_count,
                        info.indexed_vectors_count,
                        "yellow" if c.optimizing else "green",
                    )
                )
            return out

        return await self._run(collect)

    async def snapshot(self, collection: str, dest: Path) -> Path:
        """A tar of the flushed shard and its meta.json, written while writes wait."""
        s = self.shards
        path: Path = await self._run(lambda: guard(snapshots.write, s, collection, dest))
        return path

    async def restore(self, snapshot: Path, collection: str) -> int:
        s = self.shards
        n: int = await self._run(lambda: guard(snapshots.restore, s, snapshot, collection))
        return n
