"""`aistack doctor`'s checks of the vector store: the engine answers, the disk under the
embedded store, collections over `vectors.warn_points`.

The `qdrant` engine is asked directly (its readiness, its collections); the embedded
store through the running gateway's admin API, or opened here when no gateway runs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from aistack.config import Loaded
from aistack.doctor.findings import Finding, failed, passed, since, warned
from aistack.vectors.client import ask
from aistack.vectors.service import data_dir

LOW_DISK = 1e9  # bytes free under the embedded store below which doctor warns


async def _qdrant(loaded: Loaded) -> dict[str, Any]:
    from aistack.backends.transport import HttpClient
    from aistack.vectors.proxy import ProxyEngine

    cfg = loaded.config.vectors
    assert cfg.url is not None
    client = HttpClient()
    try:
        engine = ProxyEngine(cfg.url, cfg.api_key, client, timeout=cfg.timeout)
        ok, why = await engine.ready()
        cols = [{"name": s.name, "points": s.points} for s in await engine.stats()] if ok else []
        return {"engine": "qdrant", "ready": ok, "why": why, "collections": cols}
    finally:
        await client.aclose()


async def check(loaded: Loaded, gateway: str | None = None) -> list[Finding]:
    cfg = loaded.config.vectors
    if not cfg.enabled:
        return []
    t = time.monotonic()
    path = data_dir(loaded.config, loaded.base_dir)
    target = cfg.url or "qdrant" if cfg.engine == "qdrant" else str(path)
    if cfg.engine == "embedded" and not path.exists():
        return [passed("vectors", target, "embedded: no collections yet", since(t))]
    try:
        if cfg.engine == "qdrant":
            out = await _qdrant(loaded)
        else:
            out = await asyncio.to_thread(ask, loaded, gateway, "/admin/api/vectors")
    except Exception as e:
        fix = (
            "check vectors.url and its api_key"
            if cfg.engine == "qdrant"
            else ("run aistack doctor where the gateway's master key is set (AISTACK_MASTER_KEY)")
        )
        return [warned("vectors", target, f"cannot look at the vector store: {e}", fix, since(t))]
    cols = out.get("collections", [])
    if not out.get("ready", True):
        why = out.get("why")
        return [failed("vectors", target, f"not ready: {why}", "see the gateway's log", since(t))]
    n = sum(c["points"] for c in cols)
    findings = [
        passed("vectors", target, f"{out['engine']}: {len(cols)} collections, {n} points", since(t))
    ]
    findings += [
        warned(
            "vectors",
            c["name"],
            f"{c['points']} points, over vectors.warn_points ({cfg.warn_points})",
            "split it, raise vectors.warn_points, or move it to engine: qdrant",
        )
        for c in cols
        if c["points"] > cfg.warn_points
    ]
    if cfg.engine == "embedded":
        free = shutil.disk_usage(path if path.exists() else Path("/")).free
        used = sum(c.get("disk_bytes") or 0 for c in cols)
        detail = f"{used / 1e6:.1f} MB used, {free / 1e9:.1f} GB free"
        if free < LOW_DISK:
            findings.append(warned("vectors disk", str(path), detail, "free some disk"))
        else:
            findings.append(passed("vectors disk", str(path), detail))
    return findings
