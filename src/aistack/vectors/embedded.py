"""The embedded engine: the real Qdrant engine in process, through qdrant-edge-py.

One edge shard per collection, under `vectors.path` (default
$XDG_DATA_HOME/aistack/vectors): `collections/<name>/meta.json` (what it was created
with, and when last written) and `collections/<name>/shard/` (the engine's own files:
segments and write-ahead log). Aliases live in `aliases.json`.

Threads. qdrant-edge-py keeps the GIL for the whole of every call (measured: a
10k-point upsert holds it 0.6 s; building the HNSW index of 10k 384-d points, 16-20 s
on these machines), so a call on the event loop or on any thread of this process
stalls the gateway for as long as it runs. Hence:

- every engine call runs on this engine's one worker thread, never on the event loop
  thread, and large upserts go in slices so that no single hold is long;
- the index is built in another process: a flushed copy of the shard is optimized by
  `python -m aistack.vectors.optimize`, while this process keeps serving reads and
  writes on the original (writes are also kept in a replay list); then the optimized
  copy is swapped in and the writes made meanwhile are applied to it again;
- shards flush every `vectors.flush_interval` seconds when written, and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import quote, unquote

import orjson
import qdrant_edge as q

from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.qdrant import (
    QDRANT_API_VERSION,
    Op,
    bad,
    check_name,
    conflict,
    not_found,
    obj,
    point_id,
    update_result,
)
from aistack.vectors import convert as cv
from aistack.vectors.engine import CollectionStats
from aistack.vectors.snapshots import snapshot_file

log = logging.getLogger("aistack.vectors")

T = TypeVar("T")

SLICE = 256  # points per engine call in a large upsert: each holds the GIL ~15 ms
REPLAY_MAX = 200_000  # writes kept while an index is built elsewhere; past it, give up


def _dir_name(name: str) -> str:
    return quote(name, safe="")


def dir_size(path: Path) -> int:
    """Bytes allocated on disk (the engine preallocates sparse files: their length is
    not their size)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


class _Collection:
    __slots__ = (
        "deleted", "dir", "last_optimized", "meta", "name", "optimizing", "replay",
        "shard", "written", "written_at",
    )  # fmt: skip

    def __init__(self, name: str, dir: Path, meta: dict[str, Any], shard: q.EdgeShard) -> None:
        self.name = name
        self.dir = dir
        self.meta = meta
        self.shard = shard
        self.written = False  # since the last flush
        self.written_at: float = float(meta.get("last_write") or 0.0)
        self.deleted = 0  # points deleted since the last optimization
        self.last_optimized = -1  # unindexed count when last tried
        self.optimizing = False
        self.replay: list[q.UpdateOperation] | None = None

    @property
    def shard_dir(self) -> Path:
        return self.dir / "shard"

    def vectors(self) -> dict[str, int]:
        v = self.meta.get("config", {}).get("vectors") or {}
        if "size" in v:
            return {"": int(v["size"])}
        return {str(k): int(p["size"]) for k, p in v.items()}

    def update(self, op: q.UpdateOperation) -> None:
        self.shard.update(op)
        if self.replay is not None:
            self.replay.append(op)
        self.written = True
        self.written_at = time.time()

    def save_meta(self) -> None:
        self.meta["last_write"] = self.written_at or None
        tmp = self.dir / "meta.json.tmp"
        tmp.write_bytes(orjson.dumps(self.meta, option=orjson.OPT_INDENT_2))
        tmp.replace(self.dir / "meta.json")


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
        self.flush_interval = flush_interval
        self.optimize_threshold = optimize_threshold
        self.optimize_idle = optimize_idle
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aistack-vectors")
        self._cols: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = {}
        self._ops = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._optimizations: set[asyncio.Task[bool]] = set()
        self._started = False
        self._lock: IO[str] | None = None
        self.error = ""

    # -- the worker thread

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    # -- lifecycle

    async def start(self) -> None:
        try:
            await self._run(self._open_all)
        except Exception as e:
            self.error = f"cannot open the vector store at {self.path}: {e}"
            log.error("%s", self.error)
            return
        self._started = True
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="vectors-flush"))
        if self.optimize_threshold > 0:
            self._tasks.append(asyncio.create_task(self._optimize_loop(), name="vectors-optimize"))

    def _open_all(self) -> None:
        (self.path / "collections").mkdir(parents=True, exist_ok=True)
        # One process per store: a second one (a replica, a worker, a command while the
        # gateway runs) would open the same shards and corrupt them.
        lock = (self.path / "lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise RuntimeError(
                "it is open in another aistack process (several replicas or workers need "
                "engine: qdrant, or a vectors.path each)"
            ) from None
        self._lock = lock
        for d in sorted((self.path / "collections").iterdir()):
            if not (d / "meta.json").is_file() or not (d / "shard").is_dir():
                continue
            meta = orjson.loads((d / "meta.json").read_bytes())
            name = str(meta.get("name") or unquote(d.name))
            self._cols[name] = _Collection(name, d, meta, q.EdgeShard.load(str(d / "shard")))
        f = self.path / "aliases.json"
        if f.is_file():
            self._aliases = {
                a: c for a, c in orjson.loads(f.read_bytes()).items() if c in self._cols
            }
        log.info("vectors: embedded engine at %s, %d collections", self.path, len(self._cols))

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._optimizations]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._started:
            await self._run(self._close_all)
        self._pool.shutdown(wait=True)
        self._started = False

    def _close_all(self) -> None:
        for c in self._cols.values():
            try:
                c.shard.flush()
                c.save_meta()
                c.shard.close()
            except Exception:
                log.exception("vectors: closing %s failed", c.name)
            c.replay = None
        self._cols.clear()
        self._release()

    def _release(self) -> None:
        if self._lock is not None and not self._cols:
            self._lock.close()
            self._lock = None

    async def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, self.error or "starting"
        return True, "ready"

    # -- flushing and optimizing in the background

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._run(self._flush_written)
            except Exception:
                log.exception("vectors: flush failed")

    def _flush_written(self) -> None:
        for c in list(self._cols.values()):
            if c.written:
                c.written = False
                c.shard.flush()
                c.save_meta()

    def _unindexed(self, c: _Collection) -> int:
        info = c.shard.info()
        dense = max(1, len(c.vectors()))
        unindexed: int = info.points_count * dense - info.indexed_vectors_count
        return max(0, unindexed) + c.deleted

    async def _optimize_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.optimize_idle, 5.0) or 1.0)
            now = time.time()
            for c in list(self._cols.values()):
                if c.optimizing or now - c.written_at < self.optimize_idle:
                    continue
                n = await self._run(lambda c=c: self._unindexed(c))  # type: ignore[misc]
                if n >= self.optimize_threshold and n != c.last_optimized:
                    c.optimizing = True
                    t = asyncio.create_task(self.optimize(c.name), name=f"vectors-opt-{c.name}")
                    self._optimizations.add(t)
                    t.add_done_callback(self._optimizations.discard)

    async def optimize(self, name: str) -> bool:
        """Build the collection's index in another process and swap it in; whether it
        was swapped in."""
        c = self._cols.get(name)
        if c is None:
            return False
        c.optimizing = True
        work = c.dir / "optimizing"
        try:
            c.last_optimized = await self._run(lambda: self._unindexed(c))

            def copy() -> None:
                shutil.rmtree(work, ignore_errors=True)
                c.shard.flush()
                shutil.copytree(c.shard_dir, work)
                c.replay = []

            await self._run(copy)
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
            if self._cols.get(name) is not c or c.replay is None:
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

            replayed = await self._run(swap)
            log.info(
                "vectors: indexed %s in %.1f s in the background (%d writes replayed)",
                name, time.monotonic() - started, replayed,
            )  # fmt: skip
            return True
        finally:
            c.replay = None
            c.optimizing = False
            shutil.rmtree(work, ignore_errors=True)

    # -- the operations

    def _col(self, name: str) -> _Collection:
        c = self._cols.get(name) or self._cols.get(self._aliases.get(name, ""))
        if c is None:
            raise not_found(f"Collection `{name}` doesn't exist!")
        return c

    def resolve(self, name: str) -> str | None:
        """The collection a name or alias stands for, or None."""
        if name in self._cols:
            return name
        target = self._aliases.get(name)
        return target if target in self._cols else None

    async def vector_sizes(self, collection: str) -> dict[str, int]:
        return self._col(collection).vectors()

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
        fn = getattr(self, "_" + op.name, None)
        if fn is None:
            raise bad(f"{op.name} is not supported by the embedded engine")
        return await self._run(lambda: self._guard(fn, collection, arg, body, params))

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except GatewayError:
            raise
        except OSError as e:
            raise GatewayError(ErrorKind.INTERNAL, f"vector store I/O: {e}") from None
        except Exception as e:
            # The engine's own errors are about the request (a wrong dimension, an
            # unknown vector name, a filter on a missing index): Qdrant says 400.
            raise bad(str(e)) from None

    def _next_op(self) -> int:
        self._ops += 1
        return self._ops

    # collections

    def _list_collections(self, *_: Any) -> Any:
        return {"collections": [{"name": n} for n in sorted(self._cols)]}

    def _collection_exists(self, name: str, *_: Any) -> Any:
        return {"exists": self.resolve(name) is not None}

    def _create_collection(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        check_name(name)
        if name in self._cols or name in self._aliases:
            raise conflict(f"Collection `{name}` already exists!")
        vectors = cv.vectors_config(body.get("vectors"))
        sparse = cv.sparse_config(body.get("sparse_vectors"))
        if not vectors and not sparse:
            raise bad("vectors: a collection needs dense or sparse vectors")
        oc = body.get("optimizers_config") or {}
        opts = None
        if isinstance(oc, dict) and oc:
            opts = q.EdgeOptimizersConfig(
                deleted_threshold=oc.get("deleted_threshold"),
                vacuum_min_vector_number=oc.get("vacuum_min_vector_number"),
                default_segment_number=oc.get("default_segment_number"),
                max_segment_size=oc.get("max_segment_size"),
                indexing_threshold=oc.get("indexing_threshold"),
            )
        cfg = q.EdgeConfig(
            vectors=vectors or None,
            sparse_vectors=sparse or None,
            on_disk_payload=body.get("on_disk_payload"),
            hnsw_config=cv.hnsw_config(body.get("hnsw_config")),
            optimizers=opts,
            # The CPUs this process may use, not the machine's: the engine's search pool
            # sized for more cores than it has (a container, taskset) thrashes (a search
            # 8x slower, measured on one core of two).
            max_search_threads=len(os.sched_getaffinity(0)),
        )
        d = self.path / "collections" / _dir_name(name)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        shard = q.EdgeShard.create(str(d / "shard"), cfg)
        meta = {
            "name": name,
            "created_at": time.time(),
            "config": {
                k: body[k]
                for k in (
                    "vectors",
                    "sparse_vectors",
                    "hnsw_config",
                    "optimizers_config",
                    "on_disk_payload",
                )
                if body.get(k) is not None
            },
        }
        c = _Collection(name, d, meta, shard)
        c.save_meta()
        self._cols[name] = c
        return True

    def _update_collection(self, name: str, *_: Any) -> Any:
        self._col(name)  # the engine fixes its parameters at creation; accepted as Qdrant does
        return True

    def _delete_collection(self, name: str, *_: Any) -> Any:
        c = self._cols.pop(name, None)
        if c is None:
            return False
        c.replay = None
        with contextlib.suppress(Exception):
            c.shard.close()
        shutil.rmtree(c.dir, ignore_errors=True)
        self._aliases = {a: t for a, t in self._aliases.items() if t != name}
        self._save_aliases()
        return True

    def _get_collection(self, name: str, *_: Any) -> Any:
        c = self._col(name)
        info = c.shard.info()
        config = c.meta.get("config", {})
        hnsw = {
            "m": 16,
            "ef_construct": 100,
            "full_scan_threshold": 10000,
            "max_indexing_threads": 0,
            "on_disk": False,
            **(config.get("hnsw_config") or {}),
        }
        schema = {
            field: {
                "data_type": cv.SCHEMA_NAMES.get(i.data_type, "keyword"),
                "points": i.points,
            }
            for field, i in info.payload_schema.items()
        }
        return {
            "status": "yellow" if c.optimizing else "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": info.indexed_vectors_count,
            "points_count": info.points_count,
            "segments_count": info.segments_count,
            "config": {
                "params": {
                    "vectors": config.get("vectors", {}),
                    "sparse_vectors": config.get("sparse_vectors"),
                    "shard_number": 1,
                    "replication_factor": 1,
                    "write_consistency_factor": 1,
                    "on_disk_payload": bool(config.get("on_disk_payload", True)),
                },
                "hnsw_config": hnsw,
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 0,
                    "max_segment_size": None,
                    "memmap_threshold": None,
                    "indexing_threshold": 10000,
                    "flush_interval_sec": int(self.flush_interval),
                    "max_optimization_threads": None,
                    **(config.get("optimizers_config") or {}),
                },
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                "quantization_config": None,
            },
            "payload_schema": schema,
        }

    # aliases

    def _save_aliases(self) -> None:
        tmp = self.path / "aliases.json.tmp"
        tmp.write_bytes(orjson.dumps(self._aliases))
        tmp.replace(self.path / "aliases.json")

    def _update_aliases(self, _c: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        actions = body.get("actions")
        if not isinstance(actions, list):
            raise bad("actions: a list of create_alias, delete_alias and rename_alias")
        new = dict(self._aliases)
        for i, a in enumerate(actions):
            a = obj(a, f"actions[{i}]")
            if "create_alias" in a:
                x = obj(a["create_alias"], f"actions[{i}].create_alias")
                coll, alias = str(x.get("collection_name")), str(x.get("alias_name"))
                check_name(alias, "alias")
                if coll not in self._cols:
                    raise not_found(f"Collection `{coll}` doesn't exist!")
                if alias in self._cols:
                    raise conflict(f"Alias `{alias}` is the name of a collection")
                new[alias] = coll
            elif "delete_alias" in a:
                x = obj(a["delete_alias"], f"actions[{i}].delete_alias")
                alias = str(x.get("alias_name"))
                if new.pop(alias, None) is None:
                    raise not_found(f"Alias `{alias}` doesn't exist!")
            elif "rename_alias" in a:
                x = obj(a["rename_alias"], f"actions[{i}].rename_alias")
                old, to = str(x.get("old_alias_name")), str(x.get("new_alias_name"))
                check_name(to, "alias")
                if old not in new:
                    raise not_found(f"Alias `{old}` doesn't exist!")
                new[to] = new.pop(old)
            else:
                raise bad(f"actions[{i}]: create_alias, delete_alias or rename_alias")
        self._aliases = new
        self._save_aliases()
        return True

    def _list_aliases(self, *_: Any) -> Any:
        return {
            "aliases": [
                {"alias_name": a, "collection_name": c} for a, c in sorted(self._aliases.items())
            ]
        }

    def _collection_aliases(self, name: str, *_: Any) -> Any:
        self._col(name)
        return {
            "aliases": [
                {"alias_name": a, "collection_name": c}
                for a, c in sorted(self._aliases.items())
                if c == name
            ]
        }

    # payload indexes

    def _create_index(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        field = body.get("field_name")
        if not isinstance(field, str) or not field:
            raise bad("field_name: the payload field to index is required")
        c.update(
            q.UpdateOperation.create_field_index(field, cv.field_schema(body.get("field_schema")))
        )
        return update_result(self._next_op())

    def _delete_index(self, name: str, field: str, *_: Any) -> Any:
        c = self._col(name)
        c.update(q.UpdateOperation.delete_field_index(field))
        return update_result(self._next_op())

    # points: writes

    async def _upsert_sliced(self, name: str, body: dict[str, Any]) -> Any:
        c = await self._run(lambda: self._col(name))

        def build() -> list[q.Point]:
            self._check_dims(c, body)
            return cv.points_in(body)

        points = await self._run(lambda: self._guard(build))
        for i in range(0, len(points), SLICE):
            part = points[i : i + SLICE]

            def write(part: list[q.Point] = part) -> None:
                c.update(q.UpdateOperation.upsert_points(part))

            await self._run(lambda: self._guard(write))
            self._over_replay(c)
        return update_result(self._next_op())

    def _check_dims(self, c: _Collection, body: dict[str, Any]) -> None:
        """Dense vector sizes against the collection's, on the JSON (cheap), in Qdrant's
        words; anything else wrong the engine says."""
        sizes = c.vectors()
        pts = body.get("points")
        if isinstance(pts, list):
            vectors = [p.get("vector") if isinstance(p, dict) else None for p in pts]
        else:
            batch = body.get("batch")
            vecs = batch.get("vectors") if isinstance(batch, dict) else None
            if isinstance(vecs, dict):
                vectors = [{k: v} for k, vs in vecs.items() if isinstance(vs, list) for v in vs]
            else:
                vectors = vecs if isinstance(vecs, list) else []
        for v in vectors:
            named = v if isinstance(v, dict) and "indices" not in v else {"": v}
            for vname, vec in named.items():
                size = sizes.get(vname)
                if size is None:
                    if vname == "" and sizes:
                        raise bad(
                            f"this collection has named vectors ({', '.join(sizes)}): "
                            "give each vector by its name"
                        )
                    continue  # sparse, or unknown: the engine says
                if not isinstance(vec, list) or not vec or isinstance(vec[0], list):
                    continue
                if len(vec) != size:
                    raise bad(f"Vector dimension error: expected dim: {size}, got {len(vec)}")

    def _over_replay(self, c: _Collection) -> None:
        if c.replay is not None and len(c.replay) > REPLAY_MAX:
            log.warning("vectors: %s is written too fast to index it in the background", c.name)
            c.replay = None

    def _write(self, c: _Collection, op: q.UpdateOperation) -> Any:
        c.update(op)
        self._over_replay(c)
        return update_result(self._next_op())

    def _delete_points(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        ids, flt = cv.selector(body)
        if ids is not None:
            c.deleted += len(ids)
            return self._write(c, q.UpdateOperation.delete_points(ids))
        assert flt is not None
        c.deleted += c.shard.count(q.CountRequest(exact=False, filter=flt))
        return self._write(c, q.UpdateOperation.delete_points_by_filter(flt))

    def _update_vectors(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        pts = body.get("points")
        if not isinstance(pts, list):
            raise bad("points: a list of {id, vector}")
        pv = [
            q.PointVectors(point_id(obj(p).get("id")), cv.vector_in(obj(p).get("vector"), "vector"))
            for p in pts
        ]
        return self._write(c, q.UpdateOperation.update_vectors(pv))

    def _delete_vectors(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        names = body.get("vector")
        if not isinstance(names, list):
            raise bad("vector: the names of the vectors to delete")
        ids, flt = cv.selector(body)
        if ids is not None:
            return self._write(c, q.UpdateOperation.delete_vectors(ids, [str(n) for n in names]))
        assert flt is not None
        return self._write(
            c, q.UpdateOperation.delete_vectors_by_filter(flt, [str(n) for n in names])
        )

    def _payload_op(self, name: str, body: dict[str, Any], overwrite: bool) -> Any:
        c = self._col(name)
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise bad("payload: must be an object")
        key = body.get("key")
        key = str(key) if key else None
        ids, flt = cv.selector(body)
        if ids is not None:
            make = (
                q.UpdateOperation.overwrite_payload if overwrite else q.UpdateOperation.set_payload
            )
            return self._write(c, make(ids, payload, key))
        assert flt is not None
        make_f = (
            q.UpdateOperation.overwrite_payload_by_filter
            if overwrite
            else q.UpdateOperation.set_payload_by_filter
        )
        return self._write(c, make_f(flt, payload, key))

    def _set_payload(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        return self._payload_op(name, body, overwrite=False)

    def _overwrite_payload(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        return self._payload_op(name, body, overwrite=True)

    def _delete_payload(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        keys = body.get("keys")
        if not isinstance(keys, list):
            raise bad("keys: the payload fields to delete")
        ids, flt = cv.selector(body)
        keys = [str(k) for k in keys]
        if ids is not None:
            return self._write(c, q.UpdateOperation.delete_payload(ids, keys))
        assert flt is not None
        return self._write(c, q.UpdateOperation.delete_payload_by_filter(flt, keys))

    def _clear_payload(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        ids, flt = cv.selector(body)
        if ids is not None:
            return self._write(c, q.UpdateOperation.clear_payload(ids))
        assert flt is not None
        return self._write(c, q.UpdateOperation.clear_payload_by_filter(flt))

    def _batch_update(self, name: str, _a: str, body: dict[str, Any], p: Any) -> Any:
        ops = body.get("operations")
        if not isinstance(ops, list):
            raise bad("operations: a list of update operations")
        table: dict[str, Callable[[dict[str, Any]], Any]] = {
            "upsert": lambda b: self._write(
                self._col(name), q.UpdateOperation.upsert_points(cv.points_in(b))
            ),
            "delete": lambda b: self._delete_points(name, "", b, p),
            "set_payload": lambda b: self._set_payload(name, "", b, p),
            "overwrite_payload": lambda b: self._overwrite_payload(name, "", b, p),
            "delete_payload": lambda b: self._delete_payload(name, "", b, p),
            "clear_payload": lambda b: self._clear_payload(name, "", b, p),
            "update_vectors": lambda b: self._update_vectors(name, "", b, p),
            "delete_vectors": lambda b: self._delete_vectors(name, "", b, p),
        }
        out = []
        for i, o in enumerate(ops):
            o = obj(o, f"operations[{i}]")
            if len(o) != 1 or next(iter(o)) not in table:
                raise bad(f"operations[{i}]: one of {', '.join(table)}")
            kind, b = next(iter(o.items()))
            if kind == "clear_payload" and isinstance(b, dict) and "points" in b:
                b = {"points": b["points"]}
            out.append(table[kind](obj(b, f"operations[{i}].{kind}")))
        return out

    # points: reads

    def _resolver(self, c: _Collection) -> cv.Resolve:
        def resolve(pid: int | str, using: str) -> list[float]:
            recs = c.shard.retrieve([pid], False, [using] if using else True)
            if not recs or recs[0].vector is None:
                raise not_found(f"No point with id {pid} found")
            v = recs[0].vector
            if isinstance(v, dict):
                x = v.get(using)
                if x is None:
                    raise bad(f"point {pid} has no vector named {using!r}")
                return cast("list[float]", x)
            return cast("list[float]", v)

        return resolve

    def _retrieve(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        ids = cv.ids_in(body.get("ids"), "ids")
        recs = c.shard.retrieve(
            ids,
            cv.with_payload(body.get("with_payload"), True),
            cv.with_vector(body.get("with_vector")),
        )
        return [cv.record_out(r) for r in recs]

    def _get_point(self, name: str, pid: str, *_: Any) -> Any:
        c = self._col(name)
        recs = c.shard.retrieve([point_id(pid)], True, True)
        if not recs:
            raise not_found(f"No point with id {pid} found")
        return cv.record_out(recs[0])

    def _scroll(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        recs, nxt = c.shard.scroll(cv.scroll_in(body))
        return {
            "points": [cv.record_out(r) for r in recs],
            "next_page_offset": cv.id_out(nxt) if nxt is not None else None,
        }

    def _count(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        flt = cv.filter_in(body["filter"]) if body.get("filter") is not None else None
        return {
            "count": c.shard.count(q.CountRequest(exact=bool(body.get("exact", True)), filter=flt))
        }

    def _search(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        return [cv.scored_out(p) for p in c.shard.query(cv.search_in(body))]

    def _search_batch(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        searches = body.get("searches")
        if not isinstance(searches, list):
            raise bad("searches: a list of search requests")
        reqs = [cv.search_in(obj(s, f"searches[{i}]")) for i, s in enumerate(searches)]
        results = c.shard.query_batch(q.QueryBatchRequest(reqs)) if reqs else []
        return [[cv.scored_out(p) for p in r] for r in results]

    def _query(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        req = cv.query_in(body, self._resolver(c))
        return {"points": [cv.scored_out(p) for p in c.shard.query(req)]}

    def _query_batch(self, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
        c = self._col(name)
        searches = body.get("searches")
        if not isinstance(searches, list):
            raise bad("searches: a list of query requests")
        res = self._resolver(c)
        reqs = [cv.query_in(obj(s, f"searches[{i}]"), res) for i, s in enumerate(searches)]
        results = c.shard.query_batch(q.QueryBatchRequest(reqs)) if reqs else []
        return [{"points": [cv.scored_out(p) for p in r]} for r in results]

    # -- operations for the CLI, metrics and the console

    async def stats(self) -> list[CollectionStats]:
        def collect() -> list[CollectionStats]:
            out = []
            for c in self._cols.values():
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

        def write() -> Path:
            c = self._col(collection)
            c.shard.flush()
            c.save_meta()
            dest.mkdir(parents=True, exist_ok=True)
            path = snapshot_file(dest, c.name, datetime.now(UTC))
            tmp = path.with_suffix(".partial")
            with tarfile.open(tmp, "w") as tar:
                tar.add(c.dir / "meta.json", arcname="meta.json")
                tar.add(c.shard_dir, arcname="shard")
            tmp.replace(path)
            return path

        return await self._run(lambda: self._guard(write))

    async def restore(self, snapshot: Path, collection: str) -> int:
        def restore() -> int:
            check_name(collection)
            d = self.path / "collections" / _dir_name(collection)
            tmp = self.path / "collections" / (".restore-" + _dir_name(collection))
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                with tarfile.open(snapshot, "r") as tar:
                    tar.extractall(tmp, filter="data")
                meta = orjson.loads((tmp / "meta.json").read_bytes())
            except (OSError, tarfile.TarError, orjson.JSONDecodeError, KeyError) as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise bad(f"{snapshot} is not an aistack vector snapshot: {e}") from None
            old = self._cols.pop(collection, None)
            if old is not None:
                with contextlib.suppress(Exception):
                    old.shard.close()
                shutil.rmtree(old.dir, ignore_errors=True)
            meta["name"] = collection
            tmp.rename(d)
            c = _Collection(collection, d, meta, q.EdgeShard.load(str(d / "shard")))
            c.save_meta()
            self._cols[collection] = c
            n: int = c.shard.count(q.CountRequest())
            return n

        return await self._run(lambda: self._guard(restore))
