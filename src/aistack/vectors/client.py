"""The vector store's admin API, asked from a command (`aistack vectors`, `aistack
doctor`): the running gateway when one answers, else (engine `embedded`) the store
itself, opened here, since nothing else has it open then.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from aistack.config import Loaded


class Unreachable(Exception):
    pass


def gateway_url(loaded: Loaded, given: str | None) -> str:
    if given:
        return given.rstrip("/")
    s = loaded.config.server
    if s.public_url:
        return s.public_url.rstrip("/")
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{s.port}"


def _call(url: str, key: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    if not url.startswith(("http://", "https://")):
        raise RuntimeError(f"--gateway {url}: give an http(s):// URL")
    req = urllib.request.Request(  # noqa: S310 (an http(s) URL, checked above)
        url + path, data, method="POST" if data is not None else "GET"
    )
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310 (the operator's URL)
            return orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = orjson.loads(e.read())["error"]["message"]
        except Exception:
            msg = str(e)
        raise RuntimeError(f"{url}: {e.code}: {msg}") from None
    except urllib.error.URLError as e:
        raise Unreachable(f"{url}: {e.reason}") from None


async def _direct(loaded: Loaded, path: str, body: dict[str, Any] | None) -> Any:
    """The same answers as the admin API, from the embedded store opened here."""
    from aistack.vectors.embedded import EmbeddedEngine
    from aistack.vectors.service import data_dir
    from aistack.vectors.snapshots import prune
    from aistack.vectors.tenancy import Tenancy, describe

    cfg = loaded.config.vectors
    root = data_dir(loaded.config, loaded.base_dir)
    engine = EmbeddedEngine(root, optimize_threshold=0)
    await engine.start()
    if engine.error:
        raise RuntimeError(engine.error)
    tenancy = Tenancy(cfg.quotas, await asyncio.to_thread(_grants, loaded))
    try:
        if path == "/admin/api/vectors":
            out = describe(tenancy, await engine.stats())
            return {"engine": "embedded", "ready": True, "collections": out}
        assert body is not None
        if path.endswith("/snapshot"):
            dest = Path(body.get("dir") or cfg.backup.dir or "")
            names = (
                [body["collection"]]
                if body.get("collection")
                else [s.name for s in await engine.stats()]
            )
            made = [str(await engine.snapshot(n, dest)) for n in names]
            pruned = (
                prune(dest, cfg.backup)
                if not body.get("collection") and not body.get("dir")
                else []
            )
            return {"snapshots": made, "pruned": [str(p) for p in pruned]}
        if path.endswith("/restore"):
            n = await engine.restore(Path(body["snapshot"]), body["collection"])
            return {"collection": body["collection"], "points": n}
        raise AssertionError(path)
    finally:
        await engine.close()


def _grants(loaded: Loaded) -> dict[str, list[str]]:
    """The sharing grants in the gateway's store (none when it cannot be read)."""
    from aistack.store import open_store

    store = open_store(loaded.config.database_url, loaded.base_dir, loaded.data_dir)
    try:
        store.check_schema()
        return store.vector_grants()
    except Exception:
        return {}
    finally:
        store.close()


def ask(loaded: Loaded, gateway: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    """The admin API's answer for `path`; RuntimeError when it cannot be had."""
    url = gateway_url(loaded, gateway)
    key = os.environ.get("AISTACK_MASTER_KEY") or loaded.config.auth.master_key
    try:
        return _call(url, key, path, body)
    except Unreachable as e:
        if loaded.config.vectors.engine != "embedded" or gateway:
            raise RuntimeError(f"no gateway answers at {e}") from None
        return asyncio.run(_direct(loaded, path, body))
