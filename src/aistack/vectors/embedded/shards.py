"""The embedded engine's state: one edge shard per collection, the aliases, the lock.

On disk, under the store's directory: `collections/<name>/meta.json` (what the
collection was created with, and when last written), `collections/<name>/shard/` (the
engine's own files: segments and write-ahead log), `aliases.json`, and `lock` (held
while a process has the store open). Everything here runs on the engine's one worker
thread (engine.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

import orjson
import qdrant_edge as q

from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.qdrant import bad, not_found, update_result

log = logging.getLogger("aistack.vectors")

REPLAY_MAX = 200_000  # writes kept while an index is built elsewhere; past it, give up


def dir_name(name: str) -> str:
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


def guard(fn: Callable[..., Any], *args: Any) -> Any:
    """Run an engine call with its failures in Qdrant's terms."""
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


class Collection:
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


class Shards:
    """The open collections and aliases of one store directory."""

    def __init__(self, path: Path, flush_interval: float = 5.0) -> None:
        self.path = path
        self.flush_interval = flush_interval  # what get_collection reports
        self.cols: dict[str, Collection] = {}
        self.aliases: dict[str, str] = {}
        self._ops = 0
        self._lock: IO[str] | None = None

    # -- open and close

    def open_all(self) -> None:
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
            self.cols[name] = Collection(name, d, meta, q.EdgeShard.load(str(d / "shard")))
        f = self.path / "aliases.json"
        if f.is_file():
            self.aliases = {a: c for a, c in orjson.loads(f.read_bytes()).items() if c in self.cols}
        log.info("vectors: embedded engine at %s, %d collections", self.path, len(self.cols))

    def close_all(self) -> None:
        for c in self.cols.values():
            try:
                c.shard.flush()
                c.save_meta()
                c.shard.close()
            except Exception:
                log.exception("vectors: closing %s failed", c.name)
            c.replay = None
        self.cols.clear()
        self.release()

    def release(self) -> None:
        if self._lock is not None and not self.cols:
            self._lock.close()
            self._lock = None

    def flush_written(self) -> None:
        for c in list(self.cols.values()):
            if c.written:
                c.written = False
                c.shard.flush()
                c.save_meta()

    # -- names

    def col(self, name: str) -> Collection:
        c = self.cols.get(name) or self.cols.get(self.aliases.get(name, ""))
        if c is None:
            raise not_found(f"Collection `{name}` doesn't exist!")
        return c

    def resolve(self, name: str) -> str | None:
        """The collection a name or alias stands for, or None."""
        if name in self.cols:
            return name
        target = self.aliases.get(name)
        return target if target in self.cols else None

    def save_aliases(self) -> None:
        tmp = self.path / "aliases.json.tmp"
        tmp.write_bytes(orjson.dumps(self.aliases))
        tmp.replace(self.path / "aliases.json")

    # -- writes

    def next_op(self) -> int:
        self._ops += 1
        return self._ops

    def over_replay(self, c: Collection) -> None:
        if c.replay is not None and len(c.replay) > REPLAY_MAX:
            log.warning("vectors: %s is written too fast to index it in the background", c.name)
            c.replay = None

    def write(self, c: Collection, op: q.UpdateOperation) -> Any:
        c.update(op)
        self.over_replay(c)
        return update_result(self.next_op())
