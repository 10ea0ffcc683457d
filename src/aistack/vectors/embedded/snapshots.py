"""The embedded engine's snapshots: files of a collection's flushed shard and its
meta.json (a gzipped tar: the engine preallocates sparse files, mostly zeros),
restored into a new collection or over an existing one; and Qdrant's snapshot API on
them (create, list, download, delete, recover), the files kept under `snapshots/<name>/`
in the store's directory. Runs on the engine's worker thread, so the collection's
writes wait while a snapshot is written.

The files are aistack's own (a shard of qdrant-edge, not a Qdrant server's collection
snapshot): they restore into aistack's embedded engine, not into a Qdrant server.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import qdrant_edge as q

from aistack.dialects.qdrant import bad, check_name, not_found
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
    # Level 1: the shard's preallocated files are mostly zeros (136 MB of files for
    # 2,500 64-d points made 1.9 MB here, in 1.5 s); more effort gains little.
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
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
        with tarfile.open(snapshot, "r") as tar:  # gzipped, or a plain tar (older ones)
            tar.extractall(tmp, filter="data")
        meta = orjson.loads((tmp / "meta.json").read_bytes())
    except (OSError, tarfile.TarError, orjson.JSONDecodeError, KeyError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise bad(f"{snapshot.name} is not an aistack vector snapshot: {e}") from None
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


# -- Qdrant's snapshot API (https://api.qdrant.tech/api-reference/snapshots)


def _root(s: Shards) -> Path:
    return s.path / "snapshots"


def _dir(s: Shards, c: Collection) -> Path:
    return _root(s) / dir_name(c.name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _description(f: Path) -> dict[str, Any]:
    """Qdrant's SnapshotDescription."""
    st = f.stat()
    checksum = f.with_name(f.name + ".checksum")
    return {
        "name": f.name,
        "creation_time": datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "size": st.st_size,
        "checksum": checksum.read_text().strip() if checksum.is_file() else None,
    }


def _file(s: Shards, name: str, snapshot: str) -> Path:
    d = _dir(s, s.col(name))
    f = d / snapshot
    if Path(snapshot).name != snapshot or not snapshot.endswith(".snapshot") or not f.is_file():
        raise not_found(f"Snapshot {snapshot} of collection {name} doesn't exist")
    return f


def create_snapshot(s: Shards, name: str, *_: Any) -> Any:
    c = s.col(name)
    path = write(s, c.name, _dir(s, c))
    path.with_name(path.name + ".checksum").write_text(_sha256(path))
    return _description(path)


def list_snapshots(s: Shards, name: str, *_: Any) -> Any:
    d = _dir(s, s.col(name))
    files = sorted(d.glob("*.snapshot")) if d.is_dir() else []
    return [_description(f) for f in files]


def get_snapshot(s: Shards, name: str, snapshot: str, *_: Any) -> Path:
    """The file itself (the route sends its bytes)."""
    return _file(s, name, snapshot)


def delete_snapshot(s: Shards, name: str, snapshot: str, *_: Any) -> Any:
    f = _file(s, name, snapshot)
    f.unlink()
    f.with_name(f.name + ".checksum").unlink(missing_ok=True)
    return True


def recover_snapshot(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    """From a `file://` location among this store's snapshots (a URL would have this
    process fetch whatever a caller names: upload the file instead)."""
    location = body.get("location")
    if not isinstance(location, str) or not location:
        raise bad("location: the snapshot's file:// URL is required")
    u = urlsplit(location)
    if u.scheme != "file":
        raise bad(
            "location: only file:// locations of this store's own snapshots are recovered "
            "here; upload the file instead (POST /collections/{name}/snapshots/upload)"
        )
    path = Path(unquote(u.path)).resolve()
    root = _root(s).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise bad(f"location: {path} is not one of this store's snapshots (under {root})")
    want = body.get("checksum")
    if isinstance(want, str) and want and want != _sha256(path):
        raise bad(f"checksum: {path.name}'s SHA-256 is not {want}")
    restore(s, path, name)
    return True


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (create_snapshot, list_snapshots, get_snapshot, delete_snapshot, recover_snapshot)
}
