"""The admin API under /admin/api: keys, usage reports, the request log, the gate's state.

JSON in, JSON out, errors in OpenAI's envelope (the plain dialect). Every route needs
an admin (http/auth.py): the master key (`Authorization: Bearer`), forward-auth
headers from a trusted proxy, or a console session. docs/admin-api.md describes each
route; the console's own views are in admin_views.py.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from aistack.access.gate import Gate, new_record
from aistack.access.keys import SpecError, parse_budget, parse_expiry, parse_since
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.http.asgi import Request, query_of, respond, respond_json
from aistack.service import Gateway, RequestContext
from aistack.store.calendar import now_ms
from aistack.store.records import GROUPS


def _gate(gw: Gateway) -> Gate:
    if gw.gate is None:
        raise GatewayError(ErrorKind.NOT_FOUND, "the admin API is not enabled")
    return gw.gate


def _int(q: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise invalid(f"{name}: expected a whole number, got {raw!r}", param=name) from None
    if not lo <= v <= hi:
        raise invalid(f"{name}: must be between {lo} and {hi}", param=name)
    return v


async def status(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    await respond_json(
        req,
        {
            "auth": {
                "mode": "open" if g.open else "keys",
                "master_key": g.has_master,
                "keys": sum(1 for r in g.records if r.revoked_at is None),
            },
            "database": {"kind": g.store.kind, "where": g.store.where},
            "ledger": {"enabled": g.ledger_enabled, **g.ledger.status()},
            "limits": g.limiter.status(),
        },
    )


async def list_keys(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    if g.ledger_enabled:
        await g.ledger.flush()  # so last_used_at includes the requests just made
    records = await g.store.run(g.store.list_keys)
    show_all = query_of(req).get("all", "") in ("1", "true", "yes")
    now = now_ms()
    out = []
    for r in records:
        if r.revoked_at is not None and not show_all:
            continue
        d = r.public()
        d["state"] = r.state(now)
        d["spent"] = round(g.spent(r.id), 8) if r.budget is not None else None
        out.append(d)
    await respond_json(req, {"keys": out})


def _opt_int(body: dict[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise invalid(f"{name}: expected a positive whole number", param=name)
    return v


async def create_key(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    body = req.json()
    if not isinstance(body, dict):
        raise invalid("expected a JSON object")
    fields = {
        "name", "models", "scopes", "rpm", "tpm", "concurrent", "budget", "expires",
        "images_per_minute",
    }  # fmt: skip
    unknown = set(body) - fields
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    name = body.get("name")
    if not isinstance(name, str):
        raise invalid("name: required, the app this key is for", param="name")
    models = body.get("models") or []
    if isinstance(models, str):
        models = [m for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise invalid("models: expected a list of model names or globs", param="models")
    key_scopes = body.get("scopes") or []
    if isinstance(key_scopes, str):
        key_scopes = [key_scopes]
    if not isinstance(key_scopes, list) or not all(isinstance(x, str) for x in key_scopes):
        raise invalid("scopes: expected a list of scope names", param="scopes")
    try:
        budget = None
        b = body.get("budget")
        if isinstance(b, str):
            budget = parse_budget(b)
        elif isinstance(b, dict):
            budget = parse_budget(f"{b.get('amount')}/{b.get('period', 'month')}")
        elif b is not None:
            raise SpecError("budget: write AMOUNT/PERIOD, e.g. 5/month")
        exp = body.get("expires")
        if exp is not None and not isinstance(exp, str):
            raise SpecError("expires: write a duration (90d) or a date (2026-12-31)")
        expires_at = parse_expiry(exp) if exp else None
        new, rec = new_record(
            name,
            models=models,
            key_scopes=key_scopes,
            rpm=_opt_int(body, "rpm"),
            tpm=_opt_int(body, "tpm"),
            concurrent=_opt_int(body, "concurrent"),
            budget=budget,
            expires_at=expires_at,
            images_per_minute=_opt_int(body, "images_per_minute"),
        )
    except ValueError as e:  # SpecError too
        raise invalid(str(e)) from None
    await g.create_key(rec)
    # The only time the key is shown; it is stored as its SHA-256.
    await respond_json(req, {"key": new.key, **rec.public(), "state": "active"}, status=201)


async def revoke_key(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    ident = req.params["id"]
    done = await g.revoke_key(ident)
    if not done:
        raise GatewayError(ErrorKind.NOT_FOUND, f"no live key with id or name {ident!r}")
    await respond_json(req, {"revoked": [r.public() for r in done]})


def _since(q: dict[str, str]) -> int:
    try:
        return parse_since(q.get("since", "7d"))
    except SpecError as e:
        raise invalid(str(e), param="since") from None


async def usage(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    q = query_of(req)
    by = [b for b in q.get("by", "key").split(",") if b]
    for b in by:
        if b not in GROUPS:
            raise invalid(f"by: {b!r}; choose from {', '.join(GROUPS)}", param="by")
    since = _since(q)
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise invalid(f"format: {fmt!r}; choose json or csv", param="format")
    if g.ledger_enabled:
        await g.ledger.flush()  # a report includes the requests just made
    rep = await g.store.run(g.store.report, by, since)
    if fmt == "csv":
        name = f"aistack-usage-by-{'-'.join(by) or 'total'}.csv"
        await respond(
            req,
            200,
            usage_csv(rep.as_dict()).encode(),
            CSV_TYPE,
            [(b"content-disposition", f'attachment; filename="{name}"'.encode())],
        )
        return
    await respond_json(req, rep.as_dict())


CSV_TYPE = b"text/csv; charset=utf-8"
_CSV_FIELDS = ("requests", "errors", "tokens_in", "tokens_out", "cost", "cost_unknown",
               "avg_duration_ms", "images", "gpu_seconds", "partial", "points")  # fmt: skip


def usage_csv(report: dict[str, Any]) -> str:
    """A usage report as CSV: the group columns, then the sums, one row per group."""
    rows: list[dict[str, Any]] = report["rows"]
    groups = [c for c in rows[0] if c not in _CSV_FIELDS] if rows else list(report["by"])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*groups, *_CSV_FIELDS])
    for r in rows:
        w.writerow([*(_cell(r.get(c, "")) for c in groups), *(r[f] for f in _CSV_FIELDS)])
    return out.getvalue()


def _cell(v: object) -> object:
    """Spreadsheets run a cell that starts with =, +, - or @ as a formula: not ours."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@"):
        return "'" + v
    return v


async def requests(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    g = _gate(gw)
    q = query_of(req)
    limit = _int(q, "limit", 100, 1, 1000)
    before = _int(q, "before", 2**62, 0, 2**62)
    if g.ledger_enabled:
        await g.ledger.flush()
    errors = q.get("errors", "") in ("1", "true", "yes")
    rows = await g.store.run(
        lambda: g.store.requests(
            limit=limit,
            before_ms=before,
            key_id=q.get("key") or None,
            app=q.get("app") or None,
            model=q.get("model") or None,
            backend=q.get("backend") or None,
            errors=errors,
        )
    )
    await respond_json(req, {"requests": [r._asdict() for r in rows]})
