"""The embedded engine's collection operations: collections, aliases, payload indexes.

Each takes the store's state and the operation's (collection, path argument, body,
query parameters), runs on the engine's worker thread, and returns Qdrant's `result`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import qdrant_edge as q

from aistack.dialects.qdrant import bad, check_name, conflict, not_found, obj, update_result
from aistack.vectors import convert as cv
from aistack.vectors.embedded.shards import Collection, Shards, dir_name

# collections


def list_collections(s: Shards, *_: Any) -> Any:
    return {"collections": [{"name": n} for n in sorted(s.cols)]}


def collection_exists(s: Shards, name: str, *_: Any) -> Any:
    return {"exists": s.resolve(name) is not None}


def create_collection(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    check_name(name)
    if name in s.cols or name in s.aliases:
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
    d = s.path / "collections" / dir_name(name)
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
    c = Collection(name, d, meta, shard)
    c.save_meta()
    s.cols[name] = c
    return True


def update_collection(s: Shards, name: str, *_: Any) -> Any:
    s.col(name)  # the engine fixes its parameters at creation; accepted as Qdrant does
    return True


def delete_collection(s: Shards, name: str, *_: Any) -> Any:
    c = s.cols.pop(name, None)
    if c is None:
        return False
    c.replay = None
    with contextlib.suppress(Exception):
        c.shard.close()
    shutil.rmtree(c.dir, ignore_errors=True)
    s.aliases = {a: t for a, t in s.aliases.items() if t != name}
    s.save_aliases()
    return True


def get_collection(s: Shards, name: str, *_: Any) -> Any:
    c = s.col(name)
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
                "flush_interval_sec": int(s.flush_interval),
                "max_optimization_threads": None,
                **(config.get("optimizers_config") or {}),
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            "quantization_config": None,
        },
        "payload_schema": schema,
    }


# aliases


def update_aliases(s: Shards, _c: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    actions = body.get("actions")
    if not isinstance(actions, list):
        raise bad("actions: a list of create_alias, delete_alias and rename_alias")
    new = dict(s.aliases)
    for i, a in enumerate(actions):
        a = obj(a, f"actions[{i}]")
        if "create_alias" in a:
            x = obj(a["create_alias"], f"actions[{i}].create_alias")
            coll, alias = str(x.get("collection_name")), str(x.get("alias_name"))
            check_name(alias, "alias")
            if coll not in s.cols:
                raise not_found(f"Collection `{coll}` doesn't exist!")
            if alias in s.cols:
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
    s.aliases = new
    s.save_aliases()
    return True


def list_aliases(s: Shards, *_: Any) -> Any:
    return {
        "aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(s.aliases.items())]
    }


def collection_aliases(s: Shards, name: str, *_: Any) -> Any:
    s.col(name)
    return {
        "aliases": [
            {"alias_name": a, "collection_name": c}
            for a, c in sorted(s.aliases.items())
            if c == name
        ]
    }


# payload indexes


def create_index(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    field = body.get("field_name")
    if not isinstance(field, str) or not field:
        raise bad("field_name: the payload field to index is required")
    c.update(q.UpdateOperation.create_field_index(field, cv.field_schema(body.get("field_schema"))))
    return update_result(s.next_op())


def delete_index(s: Shards, name: str, field: str, *_: Any) -> Any:
    c = s.col(name)
    c.update(q.UpdateOperation.delete_field_index(field))
    return update_result(s.next_op())


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        list_collections, collection_exists, create_collection, update_collection,
        delete_collection, get_collection, update_aliases, list_aliases, collection_aliases,
        create_index, delete_index,
    )
}  # fmt: skip
