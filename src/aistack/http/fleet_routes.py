"""Model management over HTTP: Ollama's /api/pull, /api/delete, /api/copy (for keys with
scope `models`, admins, and an open gateway's local callers), and the fleet inventory
at GET /admin/api/models (admins).

Each call goes to one Ollama instance, chosen by `aistack.fleet.placement` (the
`X-Aistack-Backend` header or `?backend=` names one; otherwise the declaring instance,
then the one that has the model, then the first). Which one answered is in the
`X-Aistack-Backend` response header. The catalog is refreshed afterwards, so
/api/tags shows the change at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import orjson

from aistack.backends.base import Backend, manages_models, store_of
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.fleet import PullProgress
from aistack.core.models import canonical
from aistack.dialects.ollama import fleet as wire
from aistack.dialects.ollama.stream import error_line
from aistack.fleet import inventory, placement, sync
from aistack.http.asgi import (
    CUT,
    JSON_TYPE,
    NDJSON_TYPE,
    Request,
    end_stream,
    respond,
    respond_json,
    send_chunk,
    start_stream,
    was_cut,
)
from aistack.routing.catalog import Deployment
from aistack.service import Gateway, RequestContext

log = logging.getLogger("aistack.http")


def _explicit(req: Request) -> str | None:
    h = req.header(b"x-aistack-backend")
    if h:
        return h.decode("latin-1").strip()
    qs = req.query
    if qs:
        values: list[str] = parse_qs(qs.decode("latin-1")).get("backend", [])
        if values:
            return values[0]
    return None


async def _choose(gw: Gateway, req: Request, action: placement.Action, model: str) -> Backend:
    await gw.catalog.refresh()
    present = {
        name: {canonical(c.name) for c in state.cards} for name, state in gw.catalog.states.items()
    }
    return placement.choose(
        action,
        model,
        list(gw.backends.values()),
        explicit=_explicit(req),
        declared={c.name: c.models for c in gw.config.backends},
        present=present,
    )


def _backend_header(b: Backend) -> list[tuple[bytes, bytes]]:
    return [(b"x-aistack-backend", b.name.encode())]


async def _aclose(it: AsyncIterator[PullProgress]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


def _line(p: PullProgress) -> bytes:
    return orjson.dumps(wire.progress_to_wire(p)) + b"\n"


def _served_unmanaged(gw: Gateway, model: str) -> Backend | None:
    """A backend that cannot pull but already serves `model` (the embedded engine, an
    OpenAI-compatible server), when no Ollama backend declares it: pulling it is done."""
    key = canonical(model)
    for c in gw.config.backends:
        b = gw.backends.get(c.name)
        if b is not None and manages_models(b) and any(canonical(m) == key for m in c.models):
            return None
    for name, state in gw.catalog.states.items():
        b = gw.backends.get(name)
        if (
            b is not None
            and not manages_models(b)
            and any(canonical(card.name) == key for card in state.cards)
        ):
            return b
    return None


async def pull(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    r = wire.pull_request_from_wire(req.json())
    ctx.model = r.model
    model = placement.resolve_alias(r.model, gw.config.aliases)
    if _explicit(req) is None:
        await gw.catalog.refresh()
        have = _served_unmanaged(gw, model)
        if have is not None:
            # As Ollama answers a pull of a model it has: success.
            done = {"status": "success"}
            if r.stream:
                await start_stream(req, NDJSON_TYPE, _backend_header(have))
                await send_chunk(req, orjson.dumps(done) + b"\n")
                await end_stream(req)
            else:
                await respond_json(req, done, headers=_backend_header(have))
            return
    b = await _choose(gw, req, "pull", model)
    log.info("pull %s on backend %s", model, b.name)
    it = store_of(b, "pull").pull(model, insecure=r.insecure)
    try:
        # The first step before the first byte: a refusal still gets its real status.
        first = await it.__anext__()
    except StopAsyncIteration:
        raise GatewayError(
            ErrorKind.UPSTREAM_FAILED, f"backend '{b.name}' answered nothing", backend=b.name
        ) from None
    except BaseException:
        await _aclose(it)
        raise
    if not r.stream:
        # Home Assistant pulls this way: block until done, answer the last step.
        last = first
        try:
            async for p in it:
                last = p
        finally:
            await _aclose(it)
        await gw.catalog.refresh()
        await respond_json(req, wire.progress_to_wire(last), headers=_backend_header(b))
        return
    await start_stream(req, NDJSON_TYPE, _backend_header(b))
    try:
        await send_chunk(req, _line(first))
        async for p in it:
            await send_chunk(req, _line(p))
    except GatewayError as e:
        # After the first byte the status is sent; the error is the last line.
        ctx.error = e.kind.name
        await send_chunk(req, error_line(e.message))
    except asyncio.CancelledError:
        if not was_cut(req):
            raise  # the client went away
        # The shutdown grace ran out: the pull goes on on the backend; say so.
        ctx.error = CUT.kind.name
        await send_chunk(req, error_line(CUT.message))
    except Exception:
        log.exception("pull of %s on %s failed", model, b.name)
        ctx.error = "INTERNAL"
        await send_chunk(req, error_line("internal error while pulling"))
    finally:
        await _aclose(it)
    await end_stream(req)
    await gw.catalog.refresh()


async def delete(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    model = wire.delete_request_from_wire(req.json())
    ctx.model = model
    b = await _choose(gw, req, "delete", model)
    log.info("delete %s on backend %s", model, b.name)
    await store_of(b, "delete").delete(model)
    await gw.catalog.refresh()
    # As Ollama: 200 with an empty body.
    await respond(req, 200, b"", JSON_TYPE, _backend_header(b))


async def copy(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    source, destination = wire.copy_request_from_wire(req.json())
    ctx.model = source
    b = await _choose(gw, req, "copy", source)
    log.info("copy %s to %s on backend %s", source, destination, b.name)
    await store_of(b, "copy").copy(source, destination)
    await gw.catalog.refresh()
    await respond(req, 200, b"", JSON_TYPE, _backend_header(b))


async def models(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    inv = await inventory.collect(
        list(gw.backends.values()),
        declared={c.name: c.models for c in gw.config.backends},
        discover={c.name: c.discover for c in gw.config.backends},
        aliases=gw.config.aliases,
    )
    await respond_json(req, inv.to_json())


# -- memory: load and unload through the router (docs/routing.md#load-and-unload)


def _memory_request(req: Request) -> tuple[str, str | None, float | str | None]:
    body = req.json() if req.body.strip() else {}
    if not isinstance(body, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "expected a JSON object")
    unknown = set(body) - {"model", "backend", "keep_alive"}
    if unknown:
        raise GatewayError(ErrorKind.INVALID_REQUEST, f"unknown field(s): {sorted(unknown)}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise GatewayError(ErrorKind.INVALID_REQUEST, "model is required", param="model")
    backend = body.get("backend") or _explicit(req)
    if backend is not None and not isinstance(backend, str):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "backend: expected a name", param="backend")
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, int | float | str)
    ):
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            "keep_alive: seconds, or a duration like 5m",
            param="keep_alive",
        )
    return model.strip(), backend, keep_alive


def _deployments(gw: Gateway, model: str) -> list[Deployment]:
    """Where `model` (or the model an alias names) is served, in backend order."""
    route = gw.router.route(model)
    if route is None:
        raise gw.catalog.not_found(model)
    return [s.dep for s in route.chain[0].slots]


def _on(gw: Gateway, model: str, backend: str) -> Deployment:
    if backend not in gw.backends:
        raise GatewayError(ErrorKind.NOT_FOUND, f"no backend named {backend!r}", param="backend")
    for d in _deployments(gw, model):
        if d.backend.name == backend:
            return d
    raise GatewayError(
        ErrorKind.NOT_FOUND, f"backend '{backend}' has no model '{model}'", param="model"
    )


async def load(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """POST /admin/api/models/load {"model", "backend"?, "keep_alive"?}: load it there,
    or where requests for it would go (where it fits, or only idle models are in its way)."""
    model, backend, keep_alive = _memory_request(req)
    ctx.model = model
    await gw.catalog.first_round()
    if backend is not None:
        dep = _on(gw, model, backend)
    else:
        _deployments(gw, model)  # a 404 for a model nobody serves
        slot = gw.router.place(model)
        if slot is None:
            raise GatewayError(
                ErrorKind.CONFLICT,
                f"no instance can load '{model}' now: where it could go, other models are "
                "in use; name a backend to load it there anyway",
            )
        dep = slot.dep
    log.info("load %s on backend %s", dep.model, dep.backend.name)
    await gw.router.load(dep.backend.name, dep.model, keep_alive)
    await respond_json(
        req,
        {"model": dep.model, "backend": dep.backend.name, "loaded": True},
        headers=_backend_header(dep.backend),
    )


async def unload(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """POST /admin/api/models/unload {"model", "backend"?}: unload it there, or from every
    instance that holds it; a model serving a request stays (listed under `busy`)."""
    model, backend, _ = _memory_request(req)
    ctx.model = model
    await gw.catalog.first_round()
    deps = [_on(gw, model, backend)] if backend is not None else _deployments(gw, model)
    if backend is None:
        # From every instance that holds it, as they say now.
        await asyncio.gather(*(gw.health.refresh_loaded(d.backend) for d in deps))
        deps = [d for d in deps if gw.router.resident(d.backend.name, d.model).loaded]
    done: list[str] = []
    busy: list[str] = []
    for d in deps:
        if await gw.router.unload(d.backend.name, d.model):
            log.info("unload %s from backend %s", d.model, d.backend.name)
            done.append(d.backend.name)
        else:
            busy.append(d.backend.name)
    if busy and not done:
        raise GatewayError(
            ErrorKind.CONFLICT,
            f"'{model}' is answering a request on {', '.join(busy)}: it stays loaded; "
            "try again when it is idle",
        )
    await respond_json(req, {"model": model, "unloaded": done, "busy": busy})


# -- declarative sync (docs/fleet.md#sync): the plan, and running it with progress


def _sync_scope(gw: Gateway, prune: object, backends: object) -> tuple[bool, list[str]]:
    if not isinstance(prune, bool):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "prune: expected true or false")
    if isinstance(backends, str):
        backends = [b for b in backends.split(",") if b]
    if not isinstance(backends, list) or not all(isinstance(b, str) for b in backends):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "backends: expected a list of names")
    for b in backends:
        if b not in gw.backends:
            raise GatewayError(ErrorKind.NOT_FOUND, f"no backend named {b!r}")
    return prune, backends


async def _plan(gw: Gateway, prune: bool, only: list[str]) -> sync.Plan:
    return await sync.plan(
        list(gw.backends.values()),
        {c.name: c.models for c in gw.config.backends},
        prune=prune,
        only=only,
    )


async def sync_plan(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """GET /admin/api/sync?prune=1&backends=a,b: what a sync would do, changing nothing."""
    q = parse_qs(req.query.decode("latin-1"))
    prune = q.get("prune", [""])[-1] in ("1", "true", "yes")
    prune, only = _sync_scope(gw, prune, q.get("backends", [""])[-1])
    await respond_json(req, (await _plan(gw, prune, only)).to_json())


class _Events:
    """A sync's progress as NDJSON lines, progress throttled to a few a second per step."""

    EVERY = 0.25

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._last: dict[tuple[str, str], float] = {}

    def put(self, event: str, step: sync.Step, **extra: object) -> None:
        line = {"event": event, **dataclasses.asdict(step), **extra}
        self.queue.put_nowait(orjson.dumps(line) + b"\n")

    def started(self, step: sync.Step) -> None:
        self.put("started", step)

    def progress(self, step: sync.Step, p: PullProgress) -> None:
        now = time.monotonic()
        k = (step.backend, step.model)
        if p.total and p.completed < p.total and now - self._last.get(k, 0.0) < self.EVERY:
            return
        self._last[k] = now
        self.put("progress", step, progress=wire.progress_to_wire(p))

    def retrying(self, step: sync.Step, error: str, delay: float) -> None:
        self.put("retrying", step, retry_error=error, delay=delay)

    def finished(self, step: sync.Step) -> None:
        self.put("finished", step)


async def sync_run(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """POST /admin/api/sync {"prune": false, "backends": []}: plan, then pull (and with
    prune delete) step by step, streaming NDJSON events; the last line is `done`."""
    body = req.json() if req.body.strip() else {}
    if not isinstance(body, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "expected a JSON object")
    unknown = set(body) - {"prune", "backends"}
    if unknown:
        raise GatewayError(ErrorKind.INVALID_REQUEST, f"unknown field(s): {sorted(unknown)}")
    prune, only = _sync_scope(gw, body.get("prune", False), body.get("backends", []))
    p = await _plan(gw, prune, only)
    log.info("sync: %d change(s)%s", len(p.changes), " with prune" if prune else "")
    events = _Events()
    await start_stream(req, NDJSON_TYPE)
    await send_chunk(req, orjson.dumps({"event": "plan", **p.to_json()}) + b"\n")

    async def run() -> None:
        try:
            await sync.apply(p, gw.backends, events)
        finally:
            events.queue.put_nowait(None)

    task = asyncio.create_task(run(), name="admin-sync")
    try:
        while (line := await events.queue.get()) is not None:
            await send_chunk(req, line)
        await task
        done: dict[str, object] = {"event": "done", **p.to_json()}
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception as e:
        log.exception("sync failed")
        ctx.error = "INTERNAL"
        done = {"event": "done", "ok": False, "error": f"sync failed: {e}"}
    await send_chunk(req, orjson.dumps(done) + b"\n")
    await end_stream(req)
    await gw.catalog.refresh()
