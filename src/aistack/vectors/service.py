"""One vector operation, from the caller to the engine and back.

The route table has matched the path to an operation (routes.py) and knows who is
calling; here: may this caller do it, which physical names it means, text in (Qdrant
`Document` objects embedded with aistack's own routed models: texts.py), quotas, then
the engine, then names mapped back for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from aistack.config import Config, VectorsConfig, WorkerRole, data_dir_of
from aistack.core.errors import GatewayError
from aistack.dialects.qdrant import Call, bad, obj, point_id
from aistack.service import Gateway, RequestContext
from aistack.vectors.engine import CollectionStats, Engine
from aistack.vectors.ledger import points_of
from aistack.vectors.snapshots import BackupSchedule
from aistack.vectors.tenancy import Caller, Tenancy, forbidden, namespace_of
from aistack.vectors.texts import embed_points, embed_queries

log = logging.getLogger("aistack.vectors")

STATS_INTERVAL = 5.0  # seconds between refreshes of the sizes the metrics show


def data_dir(config: Config, base: Path | None = None) -> Path:
    """Where the embedded engine keeps its shards: `vectors.path` (relative to the
    config file's folder), else `vectors/` in the gateway's `data_dir` (by default
    $XDG_DATA_HOME/aistack), beside the admin credential and the SQLite database."""
    cfg = config.vectors
    if cfg.path:
        p = Path(cfg.path).expanduser()
        return p if p.is_absolute() or base is None else base / p
    return data_dir_of(config, base) / "vectors"


def build_engine(cfg: VectorsConfig, path: Path, client: Any) -> Engine:
    if cfg.engine == "qdrant":
        from aistack.vectors.proxy import ProxyEngine

        assert cfg.url is not None
        engine: Engine = ProxyEngine(cfg.url, cfg.api_key, client, timeout=cfg.timeout)
        return engine
    from aistack.vectors.embedded import EmbeddedEngine

    return EmbeddedEngine(
        path,
        flush_interval=cfg.flush_interval,
        optimize_threshold=cfg.optimize_threshold,
        optimize_idle=cfg.optimize_idle,
    )


class VectorService:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        gateway: Gateway,
        path: Path,
        base: Path | None = None,
    ) -> None:
        self.config = config.vectors
        self.engine = engine
        self.gateway = gateway
        self.path = path
        self.tenancy = Tenancy(self.config.quotas)
        # Called with (operation, outcome) after each operation: the metrics count them.
        self.on_op: Callable[[str, str], None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._stats: list[CollectionStats] = []
        self._stats_at = 0.0
        self.backups: BackupSchedule | None = None
        # One schedule per gateway: with several workers (engine: qdrant), the first runs it.
        role = WorkerRole.from_env()
        if self.config.backup.dir and (role is None or role.index == 0):
            self.backups = BackupSchedule(engine, self.config.backup, base)

    async def start(self) -> None:
        await self.engine.start()
        gate = self.gateway.gate
        if gate is not None:
            await self._import_grants_file()
            await self.load_grants()
            gate.on_access_change.append(self.load_grants)
        if self.backups is not None:
            self.backups.start()
        self._refresh = asyncio.create_task(self._refresh_stats(), name="vectors-stats")

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self.backups is not None:
            await self.backups.close()
        await self.engine.close()

    # -- sharing grants (in the store: every replica sees a change at its next watch)

    async def load_grants(self) -> None:
        gate = self.gateway.gate
        if gate is not None:
            self.tenancy.set_grants(await gate.store.run(gate.store.vector_grants))

    async def grant(self, collection: str, app: str, allow: bool = True) -> dict[str, set[str]]:
        """Let `app` read `collection` (physical), or no longer; the grants now."""
        gate = self.gateway.gate
        ns = namespace_of(app)
        if gate is None:  # no store (a gateway built without one): this process only
            g = {c: set(a) for c, a in self.tenancy.grants().items()}
            apps = g.setdefault(collection, set())
            if allow:
                apps.add(ns)
            else:
                apps.discard(ns)
            self.tenancy.set_grants(g)
        else:
            await gate.store.run(gate.store.set_vector_grant, collection, ns, allow)
            await self.load_grants()
        return self.tenancy.grants()

    async def _import_grants_file(self) -> None:
        """Grants from before they were in the store (`grants.json` in the vector
        store's directory): moved into the store once, the file renamed."""
        f = self.path / "grants.json"
        if not await asyncio.to_thread(f.is_file):
            return
        gate = self.gateway.gate
        assert gate is not None
        raw = orjson.loads(await asyncio.to_thread(f.read_bytes))
        for collection, apps in raw.items():
            for ns in apps:
                await gate.store.run(gate.store.set_vector_grant, collection, ns, True)
        await asyncio.to_thread(f.rename, f.with_suffix(".json.imported"))
        log.info("vectors: grants moved from %s into the store", f)

    async def _refresh_stats(self) -> None:
        """Sizes for the metrics, refreshed in the background (a scrape never waits)."""
        while True:
            try:
                await self.stats(0)
            except Exception as e:
                log.warning("vectors: cannot read collection sizes: %s", e)
            await asyncio.sleep(STATS_INTERVAL)

    def cached_stats(self) -> list[CollectionStats]:
        return self._stats

    async def stats(self, max_age: float = 5.0) -> list[CollectionStats]:
        now = time.monotonic()
        if now - self._stats_at > max_age:
            self._stats = await self.engine.stats()
            self._stats_at = now
        return self._stats

    # -- one operation

    async def run(
        self,
        ctx: RequestContext,
        caller: Caller,
        call: Call,
        body: dict[str, Any],
        params: dict[str, str],
    ) -> Any:
        return await self._wrapped(ctx, caller, call, body, params, self._run)

    async def _wrapped(
        self,
        ctx: RequestContext,
        caller: Caller,
        call: Call,
        body: dict[str, Any],
        params: dict[str, str],
        run: Callable[..., Awaitable[Any]],
    ) -> Any:
        op = call.op
        ctx.model = call.collection
        try:
            result = await run(ctx, caller, call, body, params)
        except GatewayError as e:
            if self.on_op is not None:
                self.on_op(op.name, str(e.status))
            physical = self.tenancy.physical(caller, call.collection) if call.collection else ""
            if physical and physical != call.collection and physical in e.message:
                # The engine names the physical collection: say it as the caller does.
                raise e.but(message=e.message.replace(physical, call.collection)) from None
            raise
        ctx.points = points_of(op.name, body, result)
        if self.on_op is not None:
            self.on_op(op.name, "ok")
        return result

    async def _run(
        self,
        ctx: RequestContext,
        caller: Caller,
        call: Call,
        body: dict[str, Any],
        params: dict[str, str],
    ) -> Any:
        op = call.op
        if op.access == "admin" and not caller.admin:
            raise forbidden(
                "snapshots are for the admin (the master key): they hold whole collections"
            )
        t = self.tenancy
        physical = t.physical(caller, call.collection) if call.collection else ""
        if physical:
            if op.access in ("write", "manage") and not t.owns(caller, physical):
                raise forbidden(
                    f"collection `{call.collection}` is shared with this key for reading only"
                )
            if op.name == "create_collection":
                await self._check_collections_quota(caller)
        if op.name == "update_aliases":
            body = self._map_alias_actions(caller, body)
        if op.name in ("upsert", "update_vectors", "batch_update"):
            await embed_points(self.gateway, self.engine, ctx, physical, op.name, body)
            if op.name == "upsert":
                await self._check_points_quota(caller, physical, body)
        elif op.name in ("query", "query_batch"):
            await embed_queries(self.gateway, self.engine, ctx, physical, op.name, body)
        result = await self.engine.call(op, physical, call.arg, body, params)
        return self._map_result(caller, op.name, result)

    async def recover_upload(
        self, ctx: RequestContext, caller: Caller, call: Call, data: bytes
    ) -> Any:
        """Qdrant's POST /collections/{name}/snapshots/upload: the uploaded file made the
        collection (new, or replaced), through the engine's restore."""

        async def restore(
            ctx: RequestContext, caller: Caller, call: Call, body: Any, params: Any
        ) -> Any:
            if not caller.admin:
                raise forbidden(
                    "snapshots are for the admin (the master key): they hold whole collections"
                )
            fd, name = await asyncio.to_thread(tempfile.mkstemp, ".snapshot", "upload-")
            path = Path(name)
            try:
                await asyncio.to_thread(_write_fd, fd, data)
                await self.engine.restore(path, call.collection)
            finally:
                await asyncio.to_thread(path.unlink, True)
            self._stats_at = 0.0
            return True

        return await self._wrapped(ctx, caller, call, {}, {}, restore)

    # -- names

    def _map_alias_actions(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        actions = body.get("actions")
        if not isinstance(actions, list):
            raise bad("actions: a list of create_alias, delete_alias and rename_alias")
        t = self.tenancy
        out = []
        for i, a in enumerate(actions):
            a = obj(a, f"actions[{i}]")
            mapped = {}
            for kind, x in a.items():
                x = dict(obj(x, f"actions[{i}].{kind}"))
                for field in ("collection_name", "alias_name", "old_alias_name", "new_alias_name"):
                    if isinstance(x.get(field), str):
                        name = t.physical(caller, x[field])
                        if not t.owns(caller, name):
                            raise forbidden(f"{x[field]}: not this key's to change")
                        x[field] = name
                mapped[kind] = x
            out.append(mapped)
        return {**body, "actions": out}

    def _map_result(self, caller: Caller, op: str, result: Any) -> Any:
        if caller.admin:
            return result
        t = self.tenancy
        if op == "list_collections":
            names = [t.plain(caller, c["name"]) for c in result.get("collections", [])]
            return {"collections": [{"name": n} for n in sorted(n for n in names if n)]}
        if op in ("list_aliases", "collection_aliases"):
            out = []
            for a in result.get("aliases", []):
                alias = t.plain(caller, a["alias_name"])
                coll = t.plain(caller, a["collection_name"])
                if alias is not None and coll is not None:
                    out.append({"alias_name": alias, "collection_name": coll})
            return {"aliases": out}
        return result

    # -- quotas

    async def _check_collections_quota(self, caller: Caller) -> None:
        q = self.tenancy.quota(caller)
        if q is None or q.collections is None:
            return
        mine = [s for s in await self.stats(0) if self.tenancy.owns(caller, s.name)]
        if len(mine) >= q.collections:
            raise forbidden(
                f"quota: app '{caller.app}' may have {q.collections} collections and has "
                f"{len(mine)} (vectors.quotas)"
            )

    async def _check_points_quota(
        self, caller: Caller, physical: str, body: dict[str, Any]
    ) -> None:
        q = self.tenancy.quota(caller)
        if q is None or (q.points is None and q.disk_mb is None):
            return
        from aistack.dialects.qdrant import BY_NAME

        if q.disk_mb is not None:
            mine = [s for s in await self.stats(5.0) if self.tenancy.owns(caller, s.name)]
            used = sum(s.disk_bytes or 0 for s in mine)
            if used >= q.disk_mb * 1e6:
                raise forbidden(
                    f"quota: app '{caller.app}' may use {q.disk_mb:g} MB of disk for vectors "
                    f"and uses {used / 1e6:.1f} MB (vectors.quotas)"
                )
        if q.points is None:
            return
        listed = await self.engine.call(BY_NAME["list_collections"], "", "", {}, {})
        total = 0
        for c in listed.get("collections", []):
            if self.tenancy.owns(caller, c["name"]):
                n = await self.engine.call(BY_NAME["count"], c["name"], "", {"exact": True}, {})
                total += int(n.get("count", 0))
        ids = _ids_of_upsert(body)
        if total + len(ids) <= q.points:
            return
        # Over, unless enough of them overwrite points that exist already.
        existing = await self.engine.call(
            BY_NAME["count"], physical, "", {"filter": {"must": [{"has_id": ids}]}}, {}
        )
        new = len(ids) - int(existing.get("count", 0))
        if total + new > q.points:
            raise forbidden(
                f"quota: app '{caller.app}' may store {q.points} points and has {total}; "
                f"this upsert adds {new} (vectors.quotas)"
            )


def _write_fd(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _ids_of_upsert(body: dict[str, Any]) -> list[int | str]:
    pts = body.get("points")
    if isinstance(pts, list):
        return [point_id(obj(p).get("id")) for p in pts]
    batch = body.get("batch")
    if isinstance(batch, dict) and isinstance(batch.get("ids"), list):
        return [point_id(i) for i in batch["ids"]]
    return []


__all__ = ["Caller", "VectorService", "build_engine", "data_dir"]
