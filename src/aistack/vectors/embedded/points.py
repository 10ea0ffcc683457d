"""The embedded engine's point operations: writes (upsert's checks, deletes, payloads,
vectors, batches) and reads (retrieve, scroll, count, search, query).

Each takes the store's state and the operation's (collection, path argument, body,
query parameters), runs on the engine's worker thread, and returns Qdrant's `result`.
Upserts are sliced by the engine (engine.py) so that no single engine call is long.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import qdrant_edge as q

from aistack.dialects.qdrant import bad, not_found, obj, point_id
from aistack.vectors import convert as cv
from aistack.vectors.embedded.shards import Collection, Shards

# writes


def check_dims(c: Collection, body: dict[str, Any]) -> None:
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


def delete_points(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    ids, flt = cv.selector(body)
    if ids is not None:
        c.deleted += len(ids)
        return s.write(c, q.UpdateOperation.delete_points(ids))
    assert flt is not None
    c.deleted += c.shard.count(q.CountRequest(exact=False, filter=flt))
    return s.write(c, q.UpdateOperation.delete_points_by_filter(flt))


def update_vectors(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    pts = body.get("points")
    if not isinstance(pts, list):
        raise bad("points: a list of {id, vector}")
    pv = [
        q.PointVectors(point_id(obj(p).get("id")), cv.vector_in(obj(p).get("vector"), "vector"))
        for p in pts
    ]
    return s.write(c, q.UpdateOperation.update_vectors(pv))


def delete_vectors(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    names = body.get("vector")
    if not isinstance(names, list):
        raise bad("vector: the names of the vectors to delete")
    ids, flt = cv.selector(body)
    if ids is not None:
        return s.write(c, q.UpdateOperation.delete_vectors(ids, [str(n) for n in names]))
    assert flt is not None
    return s.write(c, q.UpdateOperation.delete_vectors_by_filter(flt, [str(n) for n in names]))


def payload_op(s: Shards, name: str, body: dict[str, Any], overwrite: bool) -> Any:
    c = s.col(name)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        raise bad("payload: must be an object")
    key = body.get("key")
    key = str(key) if key else None
    ids, flt = cv.selector(body)
    if ids is not None:
        make = q.UpdateOperation.overwrite_payload if overwrite else q.UpdateOperation.set_payload
        return s.write(c, make(ids, payload, key))
    assert flt is not None
    make_f = (
        q.UpdateOperation.overwrite_payload_by_filter
        if overwrite
        else q.UpdateOperation.set_payload_by_filter
    )
    return s.write(c, make_f(flt, payload, key))


def set_payload(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    return payload_op(s, name, body, overwrite=False)


def overwrite_payload(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    return payload_op(s, name, body, overwrite=True)


def delete_payload(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    keys = body.get("keys")
    if not isinstance(keys, list):
        raise bad("keys: the payload fields to delete")
    ids, flt = cv.selector(body)
    keys = [str(k) for k in keys]
    if ids is not None:
        return s.write(c, q.UpdateOperation.delete_payload(ids, keys))
    assert flt is not None
    return s.write(c, q.UpdateOperation.delete_payload_by_filter(flt, keys))


def clear_payload(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    ids, flt = cv.selector(body)
    if ids is not None:
        return s.write(c, q.UpdateOperation.clear_payload(ids))
    assert flt is not None
    return s.write(c, q.UpdateOperation.clear_payload_by_filter(flt))


def batch_update(s: Shards, name: str, _a: str, body: dict[str, Any], p: Any) -> Any:
    ops = body.get("operations")
    if not isinstance(ops, list):
        raise bad("operations: a list of update operations")
    table: dict[str, Callable[[dict[str, Any]], Any]] = {
        "upsert": lambda b: s.write(s.col(name), q.UpdateOperation.upsert_points(cv.points_in(b))),
        "delete": lambda b: delete_points(s, name, "", b, p),
        "set_payload": lambda b: set_payload(s, name, "", b, p),
        "overwrite_payload": lambda b: overwrite_payload(s, name, "", b, p),
        "delete_payload": lambda b: delete_payload(s, name, "", b, p),
        "clear_payload": lambda b: clear_payload(s, name, "", b, p),
        "update_vectors": lambda b: update_vectors(s, name, "", b, p),
        "delete_vectors": lambda b: delete_vectors(s, name, "", b, p),
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


# reads


def resolver(c: Collection) -> cv.Resolve:
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


def retrieve(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    ids = cv.ids_in(body.get("ids"), "ids")
    recs = c.shard.retrieve(
        ids,
        cv.with_payload(body.get("with_payload"), True),
        cv.with_vector(body.get("with_vector")),
    )
    return [cv.record_out(r) for r in recs]


def get_point(s: Shards, name: str, pid: str, *_: Any) -> Any:
    c = s.col(name)
    recs = c.shard.retrieve([point_id(pid)], True, True)
    if not recs:
        raise not_found(f"No point with id {pid} found")
    return cv.record_out(recs[0])


def scroll(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    recs, nxt = c.shard.scroll(cv.scroll_in(body))
    return {
        "points": [cv.record_out(r) for r in recs],
        "next_page_offset": cv.id_out(nxt) if nxt is not None else None,
    }


def count(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    flt = cv.filter_in(body["filter"]) if body.get("filter") is not None else None
    return {"count": c.shard.count(q.CountRequest(exact=bool(body.get("exact", True)), filter=flt))}


def search(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    return [cv.scored_out(p) for p in c.shard.query(cv.search_in(body))]


def search_batch(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    searches = body.get("searches")
    if not isinstance(searches, list):
        raise bad("searches: a list of search requests")
    reqs = [cv.search_in(obj(x, f"searches[{i}]")) for i, x in enumerate(searches)]
    results = c.shard.query_batch(q.QueryBatchRequest(reqs)) if reqs else []
    return [[cv.scored_out(p) for p in r] for r in results]


def query(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    req = cv.query_in(body, resolver(c))
    return {"points": [cv.scored_out(p) for p in c.shard.query(req)]}


def query_batch(s: Shards, name: str, _a: str, body: dict[str, Any], _p: Any) -> Any:
    c = s.col(name)
    searches = body.get("searches")
    if not isinstance(searches, list):
        raise bad("searches: a list of query requests")
    res = resolver(c)
    reqs = [cv.query_in(obj(x, f"searches[{i}]"), res) for i, x in enumerate(searches)]
    results = c.shard.query_batch(q.QueryBatchRequest(reqs)) if reqs else []
    return [{"points": [cv.scored_out(p) for p in r]} for r in results]


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        delete_points, update_vectors, delete_vectors, set_payload, overwrite_payload,
        delete_payload, clear_payload, batch_update, retrieve, get_point, scroll, count,
        search, search_batch, query, query_batch,
    )
}  # fmt: skip
