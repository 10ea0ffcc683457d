"""Qdrant's REST JSON <-> qdrant-edge's objects, for the embedded engine.

Requests arrive as parsed JSON (dicts and lists) in Qdrant's documented shapes; these
functions build the engine's request objects from them, raising a 400 that names the
field for anything malformed, and turn the engine's answers back into Qdrant's JSON.
Documents (text in) are embedded by the service before anything gets here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import qdrant_edge as q

from aistack.dialects.qdrant import bad, obj, point_id

DISTANCES = {
    "cosine": q.Distance.Cosine,
    "euclid": q.Distance.Euclid,
    "dot": q.Distance.Dot,
    "manhattan": q.Distance.Manhattan,
}
DISTANCE_NAMES = {v: k.capitalize() for k, v in DISTANCES.items()}

SCHEMAS = {
    "keyword": q.PayloadSchemaType.Keyword,
    "integer": q.PayloadSchemaType.Integer,
    "float": q.PayloadSchemaType.Float,
    "geo": q.PayloadSchemaType.Geo,
    "text": q.PayloadSchemaType.Text,
    "bool": q.PayloadSchemaType.Bool,
    "datetime": q.PayloadSchemaType.Datetime,
    "uuid": q.PayloadSchemaType.Uuid,
}
SCHEMA_NAMES = {v: k for k, v in SCHEMAS.items()}

Resolve = Callable[[int | str, str], list[float]]  # a point id -> its vector (by name)


# -- collections


def vector_params(v: object, where: str = "vectors") -> q.EdgeVectorParams:
    d = obj(v, where)
    size = d.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size > 65536:
        raise bad(f"{where}.size: must be a whole number from 1 to 65536")
    dist = d.get("distance")
    if not isinstance(dist, str) or dist.lower() not in DISTANCES:
        raise bad(f"{where}.distance: must be one of Cosine, Euclid, Dot, Manhattan")
    multi = None
    mv = d.get("multivector_config")
    if mv is not None:
        multi = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim)
    on_disk = d.get("on_disk")
    return q.EdgeVectorParams(
        size=size,
        distance=DISTANCES[dist.lower()],
        on_disk=bool(on_disk) if on_disk is not None else None,
        multivector_config=multi,
    )


def vectors_config(v: object) -> q.EdgeVectorParams | dict[str, q.EdgeVectorParams]:
    """`vectors` of a create request: one unnamed vector, or a map of named ones."""
    if v is None:
        return {}
    d = obj(v, "vectors")
    if "size" in d or "distance" in d:
        return vector_params(d)
    return {str(name): vector_params(p, f"vectors.{name}") for name, p in d.items()}


def sparse_config(v: object) -> dict[str, q.EdgeSparseVectorParams]:
    if v is None:
        return {}
    d = obj(v, "sparse_vectors")
    out = {}
    for name, p in d.items():
        p = obj(p, f"sparse_vectors.{name}")
        modifier = q.Modifier.Idf if p.get("modifier") == "idf" else None
        out[str(name)] = q.EdgeSparseVectorParams(modifier=modifier)
    return out


def hnsw_config(v: object) -> q.HnswIndexConfig | None:
    if v is None:
        return None
    d = obj(v, "hnsw_config")
    return q.HnswIndexConfig(
        m=_int(d.get("m", 16), "hnsw_config.m"),
        ef_construct=_int(d.get("ef_construct", 100), "hnsw_config.ef_construct"),
        full_scan_threshold=_int(
            d.get("full_scan_threshold", 10_000), "hnsw_config.full_scan_threshold"
        ),
        max_indexing_threads=_int(d.get("max_indexing_threads", 0), "max_indexing_threads"),
        payload_m=d.get("payload_m") if isinstance(d.get("payload_m"), int) else None,
    )


def _int(v: object, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise bad(f"{where}: must be a whole number, 0 or more")
    return v


def field_schema(v: object) -> q.PayloadSchemaType:
    """`field_schema` of a payload index: "keyword", or {"type": "keyword", ...}."""
    name = v.get("type") if isinstance(v, dict) else v
    if not isinstance(name, str) or name.lower() not in SCHEMAS:
        raise bad(f"field_schema: must be one of {', '.join(SCHEMAS)}")
    return SCHEMAS[name.lower()]


# -- points


def vector_in(v: object, where: str) -> Any:
    """A point's vector(s): a list (the unnamed one), or a map of named dense, sparse
    or multi vectors."""
    if isinstance(v, list):
        return _dense_or_multi(v, where)
    if isinstance(v, dict):
        if "indices" in v and "values" in v:
            return _sparse(v, where)
        return {str(k): vector_in(x, f"{where}.{k}") for k, x in v.items()}
    raise bad(f"{where}: must be a list of numbers or a map of named vectors")


def _dense_or_multi(v: list[Any], where: str) -> Any:
    if v and isinstance(v[0], list):
        return [_floats(x, where) for x in v]
    return _floats(v, where)


def _floats(v: list[Any], where: str) -> list[float]:
    # As parsed: the engine reads the numbers itself, and refuses anything else (a 400).
    if v and not isinstance(v[0], int | float):
        raise bad(f"{where}: must be a list of numbers")
    return v


def _sparse(v: dict[str, Any], where: str) -> q.SparseVector:
    idx, vals = v.get("indices"), v.get("values")
    if not isinstance(idx, list) or not isinstance(vals, list) or len(idx) != len(vals):
        raise bad(f"{where}: a sparse vector needs indices and values of the same length")
    return q.SparseVector([int(i) for i in idx], [float(x) for x in vals])


def points_in(body: dict[str, Any]) -> list[q.Point]:
    """`points` (a list of {id, vector, payload}) or `batch` ({ids, vectors, payloads})."""
    pts = body.get("points")
    if isinstance(pts, list):
        out = []
        for i, p in enumerate(pts):
            p = obj(p, f"points[{i}]")
            if "vector" not in p:
                raise bad(f"points[{i}].vector: missing")
            payload = p.get("payload")
            if payload is not None and not isinstance(payload, dict):
                raise bad(f"points[{i}].payload: must be an object")
            out.append(
                q.Point(
                    point_id(p.get("id")), vector_in(p["vector"], f"points[{i}].vector"), payload
                )
            )
        return out
    batch = body.get("batch")
    if isinstance(batch, dict):
        ids = batch.get("ids")
        vecs = batch.get("vectors")
        if not isinstance(ids, list):
            raise bad("batch.ids: must be a list")
        if isinstance(vecs, dict):  # named: {name: [v1, v2, ...]}
            per = [{k: vs[i] for k, vs in vecs.items()} for i in range(len(ids))]
        elif isinstance(vecs, list) and len(vecs) == len(ids):
            per = vecs
        else:
            raise bad("batch.vectors: one vector per id")
        payloads = batch.get("payloads") or [None] * len(ids)
        if not isinstance(payloads, list) or len(payloads) != len(ids):
            raise bad("batch.payloads: one payload per id")
        return [
            q.Point(point_id(i), vector_in(v, f"batch.vectors[{n}]"), p)
            for n, (i, v, p) in enumerate(zip(ids, per, payloads, strict=True))
        ]
    raise bad("points: a list of points, or a batch of ids and vectors, is required")


def ids_in(v: object, where: str = "points") -> list[Any]:
    if not isinstance(v, list):
        raise bad(f"{where}: must be a list of point ids")
    return [point_id(x) for x in v]


def id_out(v: object) -> int | str:
    return str(v) if isinstance(v, uuid.UUID) else v  # type: ignore[return-value]


def selector(body: dict[str, Any]) -> tuple[list[Any] | None, q.Filter | None]:
    """Which points an update is about: `points` (ids, or a filter), or `filter`."""
    pts = body.get("points")
    if isinstance(pts, dict):
        return None, filter_in(pts.get("filter", pts), "points")
    if pts is not None:
        return ids_in(pts), None
    if body.get("filter") is not None:
        return None, filter_in(body["filter"])
    raise bad("points or filter: say which points")


# -- filters


def filter_in(v: object, where: str = "filter") -> q.Filter:
    d = obj(v, where)

    def conds(name: str) -> list[Any] | None:
        c = d.get(name)
        if c is None:
            return None
        items = c if isinstance(c, list) else [c]
        return [condition(x, f"{where}.{name}[{i}]") for i, x in enumerate(items)]

    ms = d.get("min_should")
    min_should = None
    if ms is not None:
        ms = obj(ms, f"{where}.min_should")
        items = ms.get("conditions") or []
        min_should = q.MinShould(
            [condition(x, f"{where}.min_should") for x in items],
            _int(ms.get("min_count", 1), f"{where}.min_should.min_count"),
        )
    return q.Filter(
        must=conds("must"),
        should=conds("should"),
        must_not=conds("must_not"),
        min_should=min_should,
    )


def condition(v: object, where: str) -> Any:
    d = obj(v, where)
    if "key" in d:
        return _field(d, where)
    if "has_id" in d:
        return q.HasIdCondition(set(ids_in(d["has_id"], f"{where}.has_id")))
    if "is_empty" in d:
        return q.IsEmptyCondition(str(obj(d["is_empty"], where).get("key")))
    if "is_null" in d:
        return q.IsNullCondition(str(obj(d["is_null"], where).get("key")))
    if "has_vector" in d:
        return q.HasVectorCondition(str(d["has_vector"]))
    if "nested" in d:
        n = obj(d["nested"], f"{where}.nested")
        return q.NestedCondition(str(n.get("key")), filter_in(n.get("filter"), f"{where}.nested"))
    if any(k in d for k in ("must", "should", "must_not", "min_should")):
        return filter_in(d, where)
    raise bad(f"{where}: not a condition Qdrant knows")


def _field(d: dict[str, Any], where: str) -> q.FieldCondition:
    key = d["key"]
    if not isinstance(key, str) or not key:
        raise bad(f"{where}.key: must be a payload field")
    kw: dict[str, Any] = {}
    m = d.get("match")
    if m is not None:
        kw["match"] = _match(obj(m, f"{where}.match"), f"{where}.match")
    r = d.get("range")
    if r is not None:
        r = obj(r, f"{where}.range")
        bounds: dict[str, Any] = {
            k: r[k] for k in ("gt", "gte", "lt", "lte") if r.get(k) is not None
        }
        if any(isinstance(x, str) for x in bounds.values()):
            kw["range"] = q.RangeDateTime(**{k: str(x) for k, x in bounds.items()})
        else:
            try:
                kw["range"] = q.RangeFloat(**{k: float(x) for k, x in bounds.items()})
            except (TypeError, ValueError):
                raise bad(f"{where}.range: bounds must be numbers or dates") from None
    if d.get("geo_radius") is not None:
        g = obj(d["geo_radius"], f"{where}.geo_radius")
        kw["geo_radius"] = q.GeoRadius(_geo(g.get("center"), where), float(g.get("radius", 0)))
    if d.get("geo_bounding_box") is not None:
        g = obj(d["geo_bounding_box"], f"{where}.geo_bounding_box")
        kw["geo_bounding_box"] = q.GeoBoundingBox(
            _geo(g.get("top_left"), where), _geo(g.get("bottom_right"), where)
        )
    if d.get("geo_polygon") is not None:
        g = obj(d["geo_polygon"], f"{where}.geo_polygon")
        ext = obj(g.get("exterior"), f"{where}.geo_polygon.exterior").get("points") or []
        ints = [obj(i, where).get("points") or [] for i in (g.get("interiors") or [])]
        kw["geo_polygon"] = q.GeoPolygon(
            [_geo(p, where) for p in ext], [[_geo(p, where) for p in i] for i in ints] or None
        )
    if d.get("values_count") is not None:
        vc = obj(d["values_count"], f"{where}.values_count")
        kw["values_count"] = q.ValuesCount(
            **{k: int(vc[k]) for k in ("lt", "gt", "lte", "gte") if k in vc}
        )
    for k in ("is_empty", "is_null"):
        if d.get(k) is not None:
            kw[k] = bool(d[k])
    if not kw:
        raise bad(
            f"{where}: a field condition needs match, range, geo_*, values_count, "
            "is_empty or is_null"
        )
    return q.FieldCondition(key, **kw)


def _match(m: dict[str, Any], where: str) -> Any:
    if "value" in m:
        v = m["value"]
        if not isinstance(v, str | int) or isinstance(v, float):
            raise bad(f"{where}.value: must be a string, an integer or a boolean")
        return q.MatchValue(v)
    if "any" in m:
        return q.MatchAny(_values(m["any"], f"{where}.any"))
    if "except" in m:
        return q.MatchExcept(_values(m["except"], f"{where}.except"))
    for name, cls in (
        ("text", q.MatchText),
        ("text_any", q.MatchTextAny),
        ("phrase", q.MatchPhrase),
        ("prefix", q.MatchPrefix),
        ("substring", q.MatchSubstring),
    ):
        if name in m:
            return cls(str(m[name]))
    raise bad(f"{where}: use value, any, except, text, text_any or phrase")


def _values(v: object, where: str) -> list[Any]:
    if not isinstance(v, list) or not all(isinstance(x, str | int) for x in v):
        raise bad(f"{where}: must be a list of strings or integers")
    return v


def _geo(v: object, where: str) -> q.GeoPoint:
    d = obj(v, f"{where} geo point")
    try:
        return q.GeoPoint(lon=float(d["lon"]), lat=float(d["lat"]))
    except (KeyError, TypeError, ValueError):
        raise bad(f"{where}: a geo point needs lon and lat") from None


# -- what to return


def with_payload(v: object, default: bool) -> Any:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, list):
        return q.PayloadSelector.Include([str(x) for x in v])
    if isinstance(v, dict):
        if "include" in v:
            return q.PayloadSelector.Include([str(x) for x in v["include"]])
        if "exclude" in v:
            return q.PayloadSelector.Exclude([str(x) for x in v["exclude"]])
    raise bad("with_payload: true, false, a list of fields, or {include|exclude: [...]}")


def with_vector(v: object, default: bool = False) -> Any:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, list):
        return [str(x) for x in v]
    raise bad("with_vector: true, false, or a list of vector names")


def search_params(v: object) -> q.SearchParams | None:
    if v is None:
        return None
    d = obj(v, "params")
    qp = d.get("quantization")
    quant = None
    if isinstance(qp, dict):
        quant = q.QuantizationSearchParams(
            ignore=bool(qp.get("ignore", False)),
            rescore=qp.get("rescore"),
            oversampling=qp.get("oversampling"),
        )
    ef = d.get("hnsw_ef")
    return q.SearchParams(
        hnsw_ef=ef if isinstance(ef, int) else None,
        exact=bool(d.get("exact", False)),
        quantization=quant,
        indexed_only=bool(d.get("indexed_only", False)),
    )


def _limit(v: object, default: int, where: str = "limit") -> int:
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise bad(f"{where}: must be a whole number, 0 or more")
    return v


# -- queries


def search_in(d: dict[str, Any]) -> q.QueryRequest:
    """The older /points/search body, as a query."""
    v = d.get("vector")
    using = None
    if isinstance(v, dict) and "vector" in v:
        using = str(v.get("name") or "") or None
        v = v["vector"]
    if v is None:
        raise bad("vector: the query vector is required")
    return q.QueryRequest(
        limit=_limit(d.get("limit"), 10),
        offset=_limit(d.get("offset"), 0, "offset"),
        query=q.Query.Nearest(vector_in(v, "vector"), using=using),
        filter=filter_in(d["filter"]) if d.get("filter") is not None else None,
        params=search_params(d.get("params")),
        with_payload=with_payload(d.get("with_payload"), False),
        with_vector=with_vector(d.get("with_vector")),
        score_threshold=d.get("score_threshold"),
    )


def query_in(d: dict[str, Any], resolve: Resolve) -> q.QueryRequest:
    """The universal /points/query body."""
    using = d.get("using")
    using = str(using) if using else None
    return q.QueryRequest(
        limit=_limit(d.get("limit"), 10),
        offset=_limit(d.get("offset"), 0, "offset"),
        query=_scoring(d.get("query"), using, resolve),
        prefetches=_prefetches(d.get("prefetch"), resolve),
        filter=filter_in(d["filter"]) if d.get("filter") is not None else None,
        params=search_params(d.get("params")),
        with_payload=with_payload(d.get("with_payload"), False),
        with_vector=with_vector(d.get("with_vector")),
        score_threshold=d.get("score_threshold"),
    )


def _prefetches(v: object, resolve: Resolve) -> list[q.Prefetch] | None:
    if v is None:
        return None
    items = v if isinstance(v, list) else [v]
    out = []
    for i, p in enumerate(items):
        p = obj(p, f"prefetch[{i}]")
        using = str(p["using"]) if p.get("using") else None
        out.append(
            q.Prefetch(
                limit=_limit(p.get("limit"), 10, f"prefetch[{i}].limit"),
                query=_scoring(p.get("query"), using, resolve),
                prefetches=_prefetches(p.get("prefetch"), resolve),
                params=search_params(p.get("params")),
                filter=filter_in(p["filter"]) if p.get("filter") is not None else None,
                score_threshold=p.get("score_threshold"),
            )
        )
    return out


def _vector_of(v: object, using: str | None, resolve: Resolve, where: str) -> Any:
    """A vector given inline, or the vector of a point given by its id."""
    if isinstance(v, int | str) and not isinstance(v, bool):
        return resolve(point_id(v), using or "")
    return vector_in(v, where)


def _scoring(v: object, using: str | None, resolve: Resolve) -> Any:
    if v is None:
        return None
    if isinstance(v, list | int | str) and not isinstance(v, bool):
        return q.Query.Nearest(_vector_of(v, using, resolve, "query"), using=using)
    d = obj(v, "query")
    if "indices" in d and "values" in d:
        return q.Query.Nearest(_sparse(d, "query"), using=using)
    if "nearest" in d:
        return q.Query.Nearest(
            _vector_of(d["nearest"], using, resolve, "query.nearest"), using=using
        )
    if "recommend" in d:
        r = obj(d["recommend"], "query.recommend")
        pos = [_vector_of(x, using, resolve, "query.recommend") for x in r.get("positive") or []]
        neg = [_vector_of(x, using, resolve, "query.recommend") for x in r.get("negative") or []]
        rq = q.RecommendQuery(positives=pos, negatives=neg)
        if r.get("strategy") == "sum_scores":
            return q.Query.RecommendSumScores(rq, using=using)
        return q.Query.RecommendBestScore(rq, using=using)
    if "fusion" in d:
        f = str(d["fusion"]).lower()
        if f == "rrf":
            return q.Fusion.Rrf(k=2)
        if f == "dbsf":
            return q.Fusion.Dbsf()
        raise bad("query.fusion: rrf or dbsf")
    if "rrf" in d:
        r = obj(d["rrf"], "query.rrf")
        return q.Fusion.Rrf(k=_int(r.get("k", 2), "query.rrf.k"), weights=r.get("weights"))
    if "order_by" in d:
        return _order_by(d["order_by"])
    if "sample" in d:
        if d["sample"] != "random":
            raise bad("query.sample: only random")
        return q.Sample.Random
    raise bad(
        "query: the embedded engine takes a vector, a point id, nearest, recommend, "
        "fusion, rrf, order_by or sample"
    )


def _order_by(v: object) -> q.OrderBy:
    if isinstance(v, str):
        return q.OrderBy(v)
    d = obj(v, "order_by")
    direction = d.get("direction")
    return q.OrderBy(
        str(d.get("key")),
        direction=q.Direction.Desc
        if direction == "desc"
        else q.Direction.Asc
        if direction
        else None,
        start_from=d.get("start_from"),
    )


def scroll_in(d: dict[str, Any]) -> q.ScrollRequest:
    off = d.get("offset")
    ob = d.get("order_by")
    return q.ScrollRequest(
        offset=point_id(off) if off is not None else None,
        limit=_limit(d.get("limit"), 10),
        filter=filter_in(d["filter"]) if d.get("filter") is not None else None,
        with_payload=with_payload(d.get("with_payload"), True),
        with_vector=with_vector(d.get("with_vector")),
        order_by=_order_by(ob) if ob is not None else None,
    )


# -- answers


def _vector_out(v: object) -> object:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if isinstance(x, q.SparseVector):
                out[k] = {"indices": x.indices, "values": x.values}
            else:
                out[k] = x
        if set(out) == {""}:
            return out[""]
        return out
    return v


def scored_out(p: q.ScoredPoint) -> dict[str, object]:
    return {
        "id": id_out(p.id),
        "version": p.version,
        "score": p.score,
        "payload": p.payload,
        "vector": _vector_out(p.vector) if p.vector is not None else None,
        "shard_key": None,
        "order_value": p.order_value,
    }


def record_out(r: q.Record) -> dict[str, object]:
    return {
        "id": id_out(r.id),
        "payload": r.payload,
        "vector": _vector_out(r.vector) if r.vector is not None else None,
        "shard_key": None,
        "order_value": r.order_value,
    }
