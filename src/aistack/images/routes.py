"""The images room's routes: OpenAI's images API, the job queue, files, presets.

- `POST /v1/images/generations` (and `/v1/images/edits`, multipart): a job that the
  request waits for; the answer is OpenAI's. A caller that goes away cancels its job.
- `POST /v1/images/jobs` returns a job at once (202); `GET /v1/images/jobs` lists them
  (newest first), `GET /v1/images/jobs/{id}` shows one, `.../events` follows it as
  Server-Sent Events, `DELETE` cancels an active job or deletes a finished one.
- `GET /v1/images/files/{id}`: an image. Its id is unguessable, so the URL alone lets
  whoever has it fetch it, as OpenAI's image URLs do (apps hand them to browsers).
- `GET /v1/images/models`: the image models and what their workflows take.
- `/v1/images/presets`: saved prompt templates (the console's).

Who sees what: a virtual key sees its own jobs; the master key, admins and console
users see every job (and may filter by key). Read-only console users may look, never
change. Everything is OpenAI-shaped, errors included.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import msgspec

from aistack.access.sessions import Sessions
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.images import ImageRequest
from aistack.core.operations import Operation
from aistack.dialects.openai import images as wire
from aistack.http.asgi import (
    Request,
    respond_json,
)
from aistack.http.table import DELETE, GET, KEY, POST, PUBLIC, Route
from aistack.images.job_routes import JobRoutes
from aistack.images.queue import ImageQueue, Who
from aistack.service import Gateway, RequestContext
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord, JobRecord

log = logging.getLogger("aistack.images")

IMAGE = Operation.IMAGE


class ImageRoutes(JobRoutes):
    def __init__(
        self,
        queue: ImageQueue,
        sessions: Sessions | None,
        *,
        public_url: str | None = None,
        timeout: float = 600.0,
        default_model: str = "",
    ) -> None:
        self.q = queue
        self.sessions = sessions
        self.public_url = public_url.rstrip("/") if public_url else None
        self.timeout = timeout
        self.default_model = default_model
        self._cancelling: set[asyncio.Future[JobRecord | None]] = set()

    def _cancelled(self, t: asyncio.Future[JobRecord | None]) -> None:
        self._cancelling.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("cancelling an abandoned image job failed: %s", t.exception())

    def routes(self) -> list[Route]:
        j = "/v1/images/jobs"
        return [
            Route(POST, "/v1/images/generations", self.generations, "openai", KEY, IMAGE,
                  name="images_generations"),
            Route(POST, "/v1/images/edits", self.edits, "openai", KEY, IMAGE, name="images_edits"),
            Route(POST, j, self.create_job, "openai", KEY, IMAGE, name="images_jobs_create"),
            Route(GET, j, self.list_jobs, "openai", KEY, name="images_jobs"),
            Route(GET, f"{j}/{{id}}", self.get_job, "openai", KEY, name="images_job"),
            Route(DELETE, f"{j}/{{id}}", self.delete_job, "openai", KEY, name="images_job_delete",
                  body=False),
            Route(GET, f"{j}/{{id}}/events", self.job_events, "openai", KEY,
                  name="images_job_events"),
            Route(GET, "/v1/images/files/{id}", self.get_file, "openai", PUBLIC,
                  name="images_file"),
            Route(DELETE, "/v1/images/files/{id}", self.delete_file, "openai", KEY,
                  name="images_file_delete", body=False),
            Route(GET, "/v1/images/models", self.models, "openai", KEY, name="images_models"),
            Route(GET, "/v1/images/presets", self.presets, "openai", KEY, name="images_presets"),
            Route(POST, "/v1/images/presets", self.create_preset, "openai", KEY,
                  name="images_preset_create"),
            Route(DELETE, "/v1/images/presets/{id}", self.delete_preset, "openai", KEY,
                  name="images_preset_delete", body=False),
        ]  # fmt: skip

    # -- making images

    async def _model(self, gw: Gateway, ctx: RequestContext, name: str) -> str:
        if not name:
            models = sorted(self.q.models())
            if self.default_model:
                name = self.default_model
            elif len(models) == 1:
                name = models[0]
            else:
                raise invalid("model is required (GET /v1/images/models lists them)", "model")
        ctx.model = name
        await gw.admit(ctx, name)
        await self.q.deployments(name)
        return name

    async def _admit_images(self, gw: Gateway, ctx: RequestContext, n: int) -> None:
        if gw.gate is not None:
            await gw.gate.admit_images(ctx, n)

    async def _queue(
        self, gw: Gateway, req: Request, ctx: RequestContext, r: ImageRequest, via: str
    ) -> JobRecord:
        await self._may_change(gw, req, ctx)
        model = await self._model(gw, ctx, r.model)
        await self._admit_images(gw, ctx, r.n)
        if model != r.model:
            r = msgspec.structs.replace(r, model=model)
        ctx.request = r
        data = r.image.data if r.image is not None else None
        origin = {"request_id": ctx.request_id, "via": via}
        return await self.q.submit(
            r, Who(ctx.key_id, ctx.app, ctx.end_user), input_image=data, origin=origin
        )

    async def generations(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        r = wire.image_request_from_wire(req.json())
        await self._make(gw, req, ctx, r)

    async def edits(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        ctype = (req.header(b"content-type") or b"").decode("latin-1")
        fields, files = wire.parse_multipart(req.body, ctype)
        r = wire.edit_request_from_form(fields, files.get("image"))
        await self._make(gw, req, ctx, r)

    async def _make(self, gw: Gateway, req: Request, ctx: RequestContext, r: ImageRequest) -> None:
        job = await self._queue(gw, req, ctx, r, "request")
        try:
            async with asyncio.timeout(self.timeout):
                job = await self.q.wait(job.id)
        except TimeoutError:
            raise GatewayError(
                ErrorKind.UPSTREAM_TIMEOUT,
                f"the image is not ready after {self.timeout:g}s; it is still being made as "
                f"job {job.id} (GET /v1/images/jobs/{job.id})",
                code="timeout",
            ) from None
        except asyncio.CancelledError:
            # The caller went away: nobody will read these images.
            task = asyncio.ensure_future(self.q.cancel(job.id))
            self._cancelling.add(task)  # held until done: the loop keeps only weak refs
            task.add_done_callback(self._cancelled)
            raise
        files = (await self.q.files([job.id]))[job.id]
        self._account(gw, ctx, job, files)
        if job.state == "failed":
            raise GatewayError(ErrorKind.UPSTREAM_FAILED, f"image generation failed: {job.error}",
                               backend=job.backend or None)  # fmt: skip
        if job.state == "cancelled":
            raise GatewayError(ErrorKind.CONFLICT, f"image job {job.id} was cancelled",
                               code="cancelled")  # fmt: skip
        items: list[tuple[str, str]] = []
        for f in files:
            if r.response_format == "url":
                items.append(("url", self._url(req, f)))
            else:
                data = await asyncio.to_thread(self.q.results.read, f)
                if data is None:
                    raise GatewayError(ErrorKind.INTERNAL, f"image {f.id} is missing on disk")
                items.append(("b64_json", base64.b64encode(data).decode()))
        size = f"{files[0].width}x{files[0].height}" if files and files[0].width else r.size
        extra = {"aistack": {"job": job.id, "seed": job.seed, "backend": job.backend}}
        await respond_json(req, wire.images_response_to_wire(job.created_at // 1000, items,
                                                              size, extra))  # fmt: skip

    def _account(
        self, gw: Gateway, ctx: RequestContext, job: JobRecord, files: list[FileRecord]
    ) -> None:
        """What the ledger, metrics and traces read about an image request: the images
        made, the backend's time, who made them."""
        for d in gw.catalog.resolve(job.model):
            if d.backend.name == job.backend:
                ctx.deployment = d
                break
        ctx.attempts = max(1, job.attempts)
        ctx.attempt_ns = ctx.started_ns
        ctx.first_ns = time.monotonic_ns()
        ctx.images, ctx.gpu_ms = len(files), job.gpu_ms

    def record(self, gw: Gateway, job: JobRecord, files: list[FileRecord]) -> None:
        """The ledger's row of a job made with POST /v1/images/jobs, when it ends (its
        request was answered at once; a waited-for one is its request's row)."""
        if job.params.get("via") != "jobs" or gw.gate is None:
            return
        now_ns = time.monotonic_ns()
        ctx = RequestContext("openai", "images_jobs_create", IMAGE, method="POST",
                             path="/v1/images/jobs")  # fmt: skip
        ctx.started_ns = now_ns - max(0, now_ms() - job.created_at) * 1_000_000
        ctx.end_ns = now_ns
        ctx.request_id = str(job.params.get("request_id") or "")
        ctx.key_id, ctx.app, ctx.end_user = job.key_id, job.app, job.end_user
        ctx.model = job.model
        self._account(gw, ctx, job, files)
        ctx.status = {"succeeded": 200, "cancelled": 499}.get(job.state, 502)
        ctx.error = {"succeeded": "", "cancelled": "CLIENT_CLOSED"}.get(
            job.state, "UPSTREAM_FAILED"
        )
        gw.gate.observe(ctx)

    async def create_job(self, gw: Gateway, req: Request, ctx: RequestContext) -> None:
        r = wire.image_request_from_wire(req.json(), default_format="url")
        job = await self._queue(gw, req, ctx, r, "jobs")
        ctx.deferred = True  # its row is written when the job ends (`record`)
        await respond_json(req, await self._wire(req, job), 202)
