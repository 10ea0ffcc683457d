"""Vectors: one Qdrant for every app, each app in its own space.

aistack serves the part of Qdrant's REST API that apps use (under /qdrant on the main
port, and optionally at the root of its own listener), authenticates by aistack keys,
maps each app's collection names into a namespace of its own, and runs the operations
on an engine: `embedded` (the Qdrant engine in process, qdrant-edge-py) or `qdrant` (a
Qdrant server or cluster, proxied with the names rewritten). See docs/vectors.md.

- routes.py: the route table's entries (Qdrant's shapes: dialects/qdrant.py, pure)
- admin.py: the admin API's vector routes (aistack vectors, the console)
- tenancy.py: namespaces, physical names, sharing grants, quotas
- engine.py: what an engine does; embedded/ and proxy.py are the two engines
- convert.py: Qdrant JSON <-> qdrant-edge objects (for the embedded engine)
- service.py: one operation, from caller to engine: who, which names, text in
- texts.py: text in (Qdrant Documents embedded with aistack's models)
- ledger.py: the points an operation counts in the usage ledger
- snapshots.py: snapshot files, restore, and their hourly/daily/weekly retention
"""

from __future__ import annotations

from pathlib import Path

from aistack.http.table import Entry
from aistack.observability.metrics import Registry
from aistack.service import Gateway
from aistack.vectors.service import VectorService


def service(gateway: Gateway, base_dir: Path | None = None) -> VectorService | None:
    """The vector store for the gateway's config (None: vectors.enabled is false), a
    component of the gateway: started after the backends, its shards flushed before the
    ledger's last write."""
    cfg = gateway.config.vectors
    if not cfg.enabled:
        return None
    from aistack.vectors.service import build_engine, data_dir

    path = data_dir(gateway.config, base_dir)
    engine = build_engine(cfg, path, gateway.client)
    vs = VectorService(gateway.config, engine, gateway, path, base_dir)
    gateway.components.append(vs)
    return vs


def metrics(vs: VectorService, registry: Registry) -> None:
    """Per collection, points and disk (from sizes refreshed in the background), and a
    counter of operations by outcome."""
    points = registry.gauge(
        "aistack_vector_points", "Points per vector collection.", ("collection", "app")
    )
    disk = registry.gauge(
        "aistack_vector_disk_bytes", "Disk used per vector collection.", ("collection", "app")
    )
    ops = registry.counter(
        "aistack_vector_operations_total",
        "Vector operations by outcome (ok, or the HTTP status).",
        ("operation", "outcome"),
    )
    vs.on_op = lambda op, outcome: ops.inc((op, outcome))

    def collect() -> None:
        points.clear()
        disk.clear()
        for s in vs.cached_stats():
            labels = (s.name, vs.tenancy.owner(s.name))
            points.set(labels, s.points)
            if s.disk_bytes is not None:
                disk.set(labels, s.disk_bytes)

    registry.collect_with(collect)


def routes(vs: VectorService) -> list[Entry]:
    """The main port's: the API under /qdrant, and the admin API's vector routes."""
    from aistack.vectors.routes import routes as entries

    return entries(vs)


def api(vs: VectorService) -> tuple[Entry, ...]:
    """Qdrant's API relative to its root (for the vector store's own listener)."""
    from aistack.vectors.routes import api as qdrant_api

    return qdrant_api(vs)


__all__ = ["VectorService", "api", "metrics", "routes", "service"]
