"""The images room's routes that read and change what exists: who sees which jobs, the
jobs (list, show, follow as Server-Sent Events, cancel or delete), the files, the image
models and the presets. What each route is and who may call it: images/routes.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from aistack.access.sessions import Sessions
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.images import TERMINAL, public_state
from aistack.dialects.openai import images as wire
from aistack.http.asgi import (
    SSE_TYPE,
    Request,
    end_stream,
    respond,
    respond_json,
    send_chunk,
    start_stream,
)
from aistack.http.auth import session_of
from aistack.images.queue import ImageQueue
from aistack.service import Gateway, RequestContext
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord, JobRecord, PresetRecord

HEARTBEAT = 15.0  # seconds between SSE comments while a job is quiet
_EVERYONE = ("", "master", "console")  # key ids that see every job


class JobRoutes:
    """The handlers over existing jobs, files and presets (ImageRoutes makes them)."""

    q: ImageQueue
    sessions: Sessions | None
    public_url: str | None

    # -- who

    def _scope(self, ctx: RequestContext) -> str | None:
        """The key whose jobs this caller sees; None: every key's."""
        return None if ctx.key_id in _EVERYONE else ctx.key_id

    async def _may_change(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """A read-only console user may look, never make or delete."""
        gate = gw.gate
        if ctx.key_id != "console" or gate is None:
            return
        s = await session_of(gate, self.sessions, req)
        if s is None:
            return
        peer = req.client[0] if req.client else None
        who = gate.session_admin(s, gate.forwarded(peer, req.header))
        if who is not None and who.read_only:
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                f"'{who.name}' has read-only access: images are made and deleted by admins",
            )

    def _visible(self, ctx: RequestContext, job: JobRecord | None, what: str) -> JobRecord:
        scope = self._scope(ctx)
        if job is None or (scope is not None and job.key_id != scope):
            raise GatewayError(ErrorKind.NOT_FOUND, f"no image job '{what}'", param="id",
                               code="job_not_found")  # fmt: skip
        return job

    async def _job(self, ctx: RequestContext, job_id: str) -> JobRecord:
        return self._visible(ctx, await self.q.get(job_id), job_id)

    def _url(self, req: Request, f: FileRecord) -> str:
        base = self.public_url
        if base is None:
            host = (req.header(b"host") or b"127.0.0.1").decode("latin-1")
            base = f"{req.scheme}://{host}"
        return f"{base}/v1/images/files/{f.id}"

    # -- jobs
    async def _wire(
        self, req: Request, job: JobRecord, files: list[FileRecord] | None = None
    ) -> dict[str, Any]:
        if files is None:
            files = (await self.q.files([job.id]))[job.id] if job.state == "succeeded" else []
        pos = await self.q.position(job)
        return wire.job_to_wire(_struct(job), [self._file_wire(req, f) for f in files], pos)

    def _file_wire(self, req: Request, f: FileRecord) -> dict[str, Any]:
        return {"id": f.id, "url": self._url(req, f), "width": f.width, "height": f.height,
                "bytes": f.bytes, "mime_type": f.mime}  # fmt: skip

    async def list_jobs(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        q = _query(req)
        limit = _int(q.get("limit"), "limit", 20, 1, 100)
        scope = self._scope(ctx)
        key = q.get("key") if scope is None else scope
        states = [s for s in (q.get("status") or "").split(",") if s]
        for s in states:
            if s not in ("queued", "running", "succeeded", "failed", "cancelled"):
                raise invalid(f"invalid status '{s}'", "status")
        if "queued" in states:
            states.append("submitted")
        before = None
        after = q.get("after")
        if after:
            cursor = self._visible(ctx, await self.q.get(after), after)
            before = cursor.created_at
        jobs: list[JobRecord] = await self.q.db(self.q.table.recent, key_id=key or None,
                                                 states=states, limit=limit + 1,
                                                 before_ms=before)  # fmt: skip
        more = len(jobs) > limit
        jobs = jobs[:limit]
        files = await self.q.files([j.id for j in jobs])
        out = [wire.job_to_wire(_struct(j), [self._file_wire(req, f) for f in files[j.id]], None)
               for j in jobs]  # fmt: skip
        await respond_json(req, wire.jobs_to_wire(out, more))

    async def get_job(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        job = await self._job(ctx, req.params["id"])
        await respond_json(req, await self._wire(req, job))

    async def delete_job(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """An active job is cancelled (its answer: the job, cancelled); a finished one
        is deleted with its images."""
        await self._may_change(gw, req, ctx)
        job = await self._job(ctx, req.params["id"])
        if job.state not in TERMINAL:
            ended = await self.q.cancel(job.id)
            await respond_json(req, await self._wire(req, ended or job))
            return
        files: list[FileRecord] = await self.q.db(self.q.table.delete, job.id)
        await asyncio.to_thread(self.q.results.unlink, files)
        await respond_json(req, {"id": job.id, "object": "image.job.deleted", "deleted": True})

    async def job_events(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        """`event: <status>` when the status changes, `event: progress` for each step,
        each with the whole job as data; the stream ends with the job."""
        job = await self._job(ctx, req.params["id"])
        await start_stream(req, SSE_TYPE)
        updates = self.q.updates(job.id).__aiter__()
        last_state = last_progress = None
        nxt: asyncio.Task[JobRecord] | None = None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(updates.__anext__())
                done, _ = await asyncio.wait({nxt}, timeout=HEARTBEAT)
                if not done:
                    await send_chunk(req, b": keep-alive\n\n")
                    continue
                try:
                    j = nxt.result()
                except StopAsyncIteration:
                    break
                finally:
                    nxt = None
                state = public_state(j.state)
                progress = (j.progress_value, j.progress_max)
                if state != last_state:
                    kind = state
                elif progress != last_progress and state == "running":
                    kind = "progress"
                else:
                    continue
                last_state, last_progress = state, progress
                body = orjson.dumps(await self._wire(req, j))
                await send_chunk(req, b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n")
        finally:
            if nxt is not None:
                nxt.cancel()
            with contextlib.suppress(Exception):
                await updates.aclose()  # type: ignore[attr-defined]
        await end_stream(req)

    # -- files

    async def get_file(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        fid = req.params["id"]
        f: FileRecord | None = await self.q.db(self.q.table.file, fid)
        data = await asyncio.to_thread(self.q.results.read, f) if f is not None else None
        if f is None or data is None:
            raise GatewayError(ErrorKind.NOT_FOUND, f"no image '{fid}'", param="id")
        name = f"{f.job_id}-{f.idx + 1}.{f.path.rsplit('.', 1)[-1]}"
        disposition = "attachment" if _query(req).get("download") else "inline"
        await respond(req, 200, data, f.mime.encode(), [
            (b"cache-control", b"private, max-age=31536000, immutable"),
            (b"content-disposition", f'{disposition}; filename="{name}"'.encode()),
            (b"x-content-type-options", b"nosniff"),
        ])  # fmt: skip

    async def delete_file(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        await self._may_change(gw, req, ctx)
        fid = req.params["id"]
        f: FileRecord | None = await self.q.db(self.q.table.file, fid)
        scope = self._scope(ctx)
        if f is None or (scope is not None and f.key_id != scope):
            raise GatewayError(ErrorKind.NOT_FOUND, f"no image '{fid}'", param="id")
        await self.q.db(self.q.table.delete_file, fid)
        await asyncio.to_thread(self.q.results.unlink, [f])
        await respond_json(req, {"id": fid, "object": "image.deleted", "deleted": True})

    # -- models and presets

    async def models(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        await gw.catalog.first_round()
        data = []
        for name, deps in sorted(self.q.models().items()):
            if not gw.visible(ctx, name):
                continue
            wf = self.q.backends[deps[0].backend.name].workflow_for(deps[0].model)
            data.append({"id": name, "object": "model", "owned_by": deps[0].backend.name,
                         "backends": [d.backend.name for d in deps], **wf.describe()})  # fmt: skip
        await respond_json(req, {"object": "list", "data": data})

    async def presets(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        scope = self._scope(ctx)
        found: list[PresetRecord] = await self.q.db(self.q.table.presets, scope)
        await respond_json(req, {"object": "list", "data": [_preset(p) for p in found]})

    async def create_preset(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        await self._may_change(gw, req, ctx)
        b = req.json()
        if not isinstance(b, dict):
            raise invalid("expected a JSON object")
        name = b.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise invalid("name is required (a string of at most 100 characters)", "name")
        params = {k: v for k, v in b.items() if k not in ("name", "model")}
        if "prompt" in params:  # the same checks as a job's, so a preset always works
            wire.image_request_from_wire({**params, "prompt": params["prompt"] or "x"})
        model = b.get("model") or ""
        if not isinstance(model, str):
            raise invalid("model must be a string", "model")
        p = PresetRecord("preset_" + os.urandom(8).hex(), name.strip(), now_ms(), ctx.key_id,
                         model, params)  # fmt: skip
        await self.q.db(self.q.table.add_preset, p)
        await respond_json(req, _preset(p), 201)

    async def delete_preset(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        await self._may_change(gw, req, ctx)
        pid = req.params["id"]
        if not await self.q.db(self.q.table.delete_preset, pid, self._scope(ctx)):
            raise GatewayError(ErrorKind.NOT_FOUND, f"no preset '{pid}'", param="id")
        await respond_json(req, {"id": pid, "object": "image.preset.deleted", "deleted": True})


def _preset(p: PresetRecord) -> dict[str, Any]:
    return {"id": p.id, "object": "image.preset", "name": p.name, "model": p.model or None,
            "created_at": p.created_at // 1000, **p.params}  # fmt: skip


def _struct(job: JobRecord) -> dict[str, Any]:
    return {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}


def _query(req: Request) -> Mapping[str, str]:
    return {k: v[-1] for k, v in urllib.parse.parse_qs(req.query.decode("latin-1")).items()}


def _int(v: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise invalid(f"invalid {name} '{v}': expected an integer", name) from None
    if not lo <= n <= hi:
        raise invalid(f"invalid {name} {n}: must be from {lo} to {hi}", name)
    return n
