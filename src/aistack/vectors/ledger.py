"""What a vector operation counts in the usage ledger: its points.

A write counts the points it names (upserted, updated, deleted or given payload by
id); a read counts the points it returns (search and query hits, retrieved and
scrolled points). A write by filter counts 0: which points a filter matched is the
engine's to know, and asking it would cost a second call on every such write. Counts,
collection listings and the like count 0.
"""

from __future__ import annotations

from typing import Any


def _len(v: object) -> int:
    return len(v) if isinstance(v, list) else 0


def _written(op: str, body: dict[str, Any]) -> int:
    if op == "upsert":
        batch = body.get("batch")
        if isinstance(batch, dict):
            return _len(batch.get("ids"))
        return _len(body.get("points"))
    # update_vectors, delete_points, the payload operations, delete_vectors: by ids
    # ({"points": [ids or {id, vector}]}), or by a filter (0).
    return _len(body.get("points"))


_WRITES = frozenset(
    ("upsert", "update_vectors", "delete_points", "delete_vectors", "set_payload",
     "overwrite_payload", "delete_payload", "clear_payload")
)  # fmt: skip


def points_of(op: str, body: dict[str, Any], result: Any) -> int:
    """The points operation `op` wrote or returned, from its request and its result."""
    if op in _WRITES:
        return _written(op, body)
    if op == "batch_update":
        total = 0
        for o in body.get("operations") or ():
            if isinstance(o, dict) and len(o) == 1:
                kind, b = next(iter(o.items()))
                if isinstance(b, dict):
                    total += _written("delete_points" if kind == "delete" else kind, b)
        return total
    if op in ("search", "retrieve"):
        return _len(result)
    if op == "get_point":
        return 1
    if op in ("query", "scroll"):
        return _len(result.get("points")) if isinstance(result, dict) else 0
    if op == "search_batch":
        return sum(_len(r) for r in result) if isinstance(result, list) else 0
    if op == "query_batch":
        if not isinstance(result, list):
            return 0
        return sum(_len(r.get("points")) for r in result if isinstance(r, dict))
    return 0
