"""The embedded engine's snapshot files: a tar of a collection's flushed shard and its
meta.json; restored into a new collection or over an existing one. Runs on the
engine's worker thread, so the collection's writes wait while a snapshot is written.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import qdrant_edge as q

from aistack.dialects.qdrant import bad, check_name
from aistack.vectors.embedded.shards import Collection, Shards, dir_name
from aistack.vectors.snapshots import snapshot_file


def write(s: Shards, collection: str, dest: Path) -> Path:
    """A snapshot of `collection` in the directory `dest`; its path."""
    c = s.col(collection)
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


def restore(s: Shards, snapshot: Path, collection: str) -> int:
    """Make `collection` (new, or replaced) the snapshot's content; its point count."""
    check_name(collection)
    d = s.path / "collections" / dir_name(collection)
    tmp = s.path / "collections" / (".restore-" + dir_name(collection))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(snapshot, "r") as tar:
            tar.extractall(tmp, filter="data")
        meta = orjson.loads((tmp / "meta.json").read_bytes())
    except (OSError, tarfile.TarError, orjson.JSONDecodeError, KeyError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise bad(f"{snapshot} is not an aistack vector snapshot: {e}") from None
    old = s.cols.pop(collection, None)
    if old is not None:
        with contextlib.suppress(Exception):
            old.shard.close()
        shutil.rmtree(old.dir, ignore_errors=True)
    meta["name"] = collection
    tmp.rename(d)
    c = Collection(collection, d, meta, q.EdgeShard.load(str(d / "shard")))
    c.save_meta()
    s.cols[collection] = c
    n: int = c.shard.count(q.CountRequest())
    return n
