"""Text in, vectors out: Qdrant `Document` objects (`{"text", "model"}`) wherever a
vector goes in an upsert or a query, embedded with aistack's own routed models (any
backend that embeds), in one call per model per request, each checked against the
collection's vector size. The embeddings are recorded in the ledger as any embedding
request (route `qdrant.embed`).
"""

from __future__ import annotations

from typing import Any

from aistack.core.chat import EmbedRequest
from aistack.core.errors import GatewayError
from aistack.core.operations import Operation
from aistack.dialects.qdrant import bad
from aistack.service import Gateway, RequestContext
from aistack.vectors.engine import Engine


def _is_document(v: object) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("text"), str)
        and isinstance(v.get("model"), str)
        and set(v) <= {"text", "model", "options"}
    )


class _Texts:
    """The Documents of one request, embedded together per model, then put in place."""

    def __init__(self) -> None:
        self.slots: list[tuple[Any, Any, str, str, str]] = []  # container, key, model, text, vector

    def find_vector(self, container: Any, key: Any, vname: str) -> None:
        v = container[key]
        if _is_document(v):
            self.slots.append((container, key, v["model"], v["text"], vname))
        elif isinstance(v, dict) and not ("indices" in v and "values" in v):
            for name in list(v):
                if _is_document(v[name]):
                    self.slots.append((v, name, v[name]["model"], v[name]["text"], str(name)))

    def find_query(self, q: Any, using: str) -> None:
        if not isinstance(q, dict):
            return
        if "query" in q:
            self._scoring(q, "query", using)
        for p in _listify(q.get("prefetch")):
            if isinstance(p, dict):
                self.find_query(p, str(p.get("using") or using))

    def _scoring(self, container: Any, key: Any, using: str) -> None:
        v = container[key]
        if _is_document(v):
            self.slots.append((container, key, v["model"], v["text"], using))
        elif isinstance(v, dict):
            if "nearest" in v:
                self._scoring(v, "nearest", using)
            rec = v.get("recommend")
            if isinstance(rec, dict):
                for side in ("positive", "negative"):
                    items = rec.get(side)
                    if isinstance(items, list):
                        for i in range(len(items)):
                            self._scoring(items, i, using)


def _listify(v: object) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


async def _embed(
    gateway: Gateway, engine: Engine, ctx: RequestContext, physical: str, texts: _Texts
) -> None:
    if not texts.slots:
        return
    sizes = await engine.vector_sizes(physical)
    by_model: dict[str, list[int]] = {}
    for i, s in enumerate(texts.slots):
        by_model.setdefault(s[2], []).append(i)
    for model, idxs in by_model.items():
        sub = RequestContext(
            ctx.dialect,
            "qdrant.embed",
            Operation.EMBED,
            method=ctx.method,
            path=ctx.path,
            request_id=ctx.request_id,
        )
        sub.key, sub.key_id, sub.app, sub.end_user = ctx.key, ctx.key_id, ctx.app, ctx.end_user
        try:
            res = await gateway.embed(
                sub, EmbedRequest(model=model, inputs=tuple(texts.slots[i][3] for i in idxs))
            )
            sub.status = 200
        except GatewayError as e:
            sub.error, sub.status = e.kind.name, e.status
            raise
        finally:
            gateway.finish(sub)
        for i, vec in zip(idxs, res.embeddings, strict=True):
            container, key, _, _, vname = texts.slots[i]
            want = sizes.get(vname)
            if want is None and vname:
                raise bad(f"collection has no dense vector named {vname!r} for the document")
            if want is not None and want != len(vec):
                raise bad(
                    f"model '{model}' makes vectors of {len(vec)} dimensions; the "
                    f"collection's vector {vname or '(unnamed)'} has {want}"
                )
            container[key] = vec


async def embed_points(
    gateway: Gateway,
    engine: Engine,
    ctx: RequestContext,
    physical: str,
    op: str,
    body: dict[str, Any],
) -> None:
    """Documents in an upsert's points (or batch, or a batch update's) -> vectors."""
    texts = _Texts()
    bodies = [body]
    if op == "batch_update":
        bodies = [
            b for o in _listify(body.get("operations")) if isinstance(o, dict)
            for k, b in o.items() if k in ("upsert", "update_vectors") and isinstance(b, dict)
        ]  # fmt: skip
    for b in bodies:
        for p in _listify(b.get("points")):
            if isinstance(p, dict) and "vector" in p:
                texts.find_vector(p, "vector", "")
        batch = b.get("batch")
        if isinstance(batch, dict):
            vecs = batch.get("vectors")
            if isinstance(vecs, list):
                for i in range(len(vecs)):
                    texts.find_vector(vecs, i, "")
            elif isinstance(vecs, dict):
                for name, vs in vecs.items():
                    if isinstance(vs, list):
                        for i in range(len(vs)):
                            if _is_document(vs[i]):
                                texts.slots.append((vs, i, vs[i]["model"], vs[i]["text"], name))
    await _embed(gateway, engine, ctx, physical, texts)


async def embed_queries(
    gateway: Gateway,
    engine: Engine,
    ctx: RequestContext,
    physical: str,
    op: str,
    body: dict[str, Any],
) -> None:
    """Documents in a query (its nearest, recommend examples, prefetches) -> vectors."""
    texts = _Texts()
    queries = _listify(body.get("searches")) if op == "query_batch" else [body]
    for qb in queries:
        if isinstance(qb, dict):
            texts.find_query(qb, str(qb.get("using") or ""))
    await _embed(gateway, engine, ctx, physical, texts)
