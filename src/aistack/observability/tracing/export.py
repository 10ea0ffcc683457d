"""OpenTelemetry traces following the GenAI conventions, exported over OTLP/HTTP (JSON).

One SERVER span per request and one CLIENT span per upstream attempt under it, so
retries and fallbacks show as siblings: the failed ones with their error, the one that
answered with its usage, finish reason and time to first chunk. Langfuse reads the
same spans (its OTLP endpoint, Basic auth) and the `langfuse.observation.*` attributes
on the answering span make it a generation with usage and cost.

Settings come from settings.py, spans are encoded by spans.py, and `Tracer` here queues
them and exports batches.

Why not the OpenTelemetry SDK: its import alone costs a noticeable part of the
start-up budget and every span goes through processors, locks and context variables.
Spans here are built once, at the end of a request, from what the request context
already recorded, and queued; a background task posts batches. A receiver that is
down, slow or refusing costs dropped spans (counted), never a slow request.

Configured by the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), OTEL_EXPORTER_OTLP[_TRACES]_HEADERS,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) (always_on,
always_off, traceidratio, parentbased_*), OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import orjson

from aistack import __version__
from aistack.backends.transport import HttpClient, Timeouts, TransportError, parse_url
from aistack.observability.tracing.settings import TraceSettings
from aistack.observability.tracing.spans import (
    OPERATIONS,
    Finished,
    SpanEncoder,
    attributes,
)
from aistack.service import RequestContext

log = logging.getLogger("aistack.tracing")

_dumps = orjson.dumps

# Seconds of span encoding between two turns of the event loop: a request that arrives
# meanwhile waits at most about this long (docs/performance.md, "in 50 µs slices").
_SLICE_S = 0.00005


class Tracer:
    """Builds a request's spans when it ends and queues them for export."""

    def __init__(self, settings: TraceSettings, client: HttpClient) -> None:
        self.settings = settings
        self.client = client
        self.endpoint = parse_url(settings.endpoint)
        self.path = ""  # the endpoint's path is part of it
        self.headers = [(b"content-type", b"application/json")] + [
            (k.lower().encode(), v.encode()) for k, v in settings.headers
        ]
        self.pending: deque[tuple[str, Finished]] = deque()
        self.queue: deque[bytes] = deque()
        self.spans = SpanEncoder(settings.langfuse)
        self.exported = 0
        self.dropped = 0
        self.failed_batches = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        resource = attributes(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                **dict(settings.resource),
            }
        )
        scope = _dumps({"name": "aistack", "version": __version__})
        self._head = (
            b'{"resourceSpans":[{"resource":{"attributes":['
            + resource
            + b']},"scopeSpans":[{"scope":'
            + scope
            + b',"spans":['
        )

    # -- at the end of each request (a few microseconds; spans.py encodes them later)

    def observe(self, ctx: RequestContext) -> None:
        """Keep what the spans need (a small copy, not the request); encode it later.

        Encoding is left to the export task, which does a whole batch in one tight loop:
        measured here, that costs half of encoding each request as it ends, and the
        request's own task is done sooner.
        """
        op = OPERATIONS.get(ctx.operation)
        if op is None or not ctx.model:
            return  # traces are for model requests, not model lists or probes
        ratio = self.settings.sample_ratio
        if not ctx.trace_id and ratio < 1.0 and random.random() >= ratio:  # noqa: S311
            return  # sampled out (a caller's trace is always followed)
        if len(self.pending) >= self.settings.queue_size:
            self.dropped += 2
            return
        self.pending.append((op, Finished(ctx, self.settings.capture_content)))
        if len(self.pending) >= self.settings.batch_size:
            self._wake.set()

    def _encode_pending(self, until: float) -> None:
        """Encode waiting requests' spans until `until` (perf_counter), at least one."""
        pending = self.pending
        queue = self.queue
        clock = time.perf_counter
        encode, out = self.spans.encode, queue.append
        while pending:
            op, ctx = pending.popleft()
            encode(op, ctx, out)
            if clock() >= until:
                return

    # -- export (a background task)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trace-export")

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.export()

    async def export(self) -> None:
        # In slices, letting requests run in between: a whole second's spans encoded in
        # one go would hold the event loop for milliseconds, which requests see as a tail.
        while self.pending:
            self._encode_pending(time.perf_counter() + _SLICE_S)
            if self.pending:
                await asyncio.sleep(0)
        queue = self.queue
        most, most_bytes = self.settings.batch_size, self.settings.batch_bytes
        while queue:
            batch = [queue.popleft()]
            size = len(batch[0])
            while queue and len(batch) < most and size + len(queue[0]) <= most_bytes:
                size += len(queue[0])
                batch.append(queue.popleft())
            n = len(batch)
            body = self._head + b",".join(batch) + b"]}]}]}"
            try:
                resp = await self.client.request(
                    "POST",
                    self.endpoint,
                    self.path,
                    body=body,
                    headers=self.headers,
                    timeouts=Timeouts(connect=2, first_byte=5, idle=5, total=10),
                )
                await resp.read()
                ok = 200 <= resp.status < 300
            except TransportError as e:
                ok = False
                log.debug("trace export failed: %s", e)
            if ok:
                self.exported += n
            else:
                self.dropped += n
                self.failed_batches += 1
                if self.failed_batches in (1, 10, 100) or self.failed_batches % 1000 == 0:
                    log.warning(
                        "trace export to %s failed %d time(s); spans are dropped, requests "
                        "are not affected",
                        self.settings.endpoint,
                        self.failed_batches,
                    )
                return  # do not hammer a receiver that is down; try again next round

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            async with asyncio.timeout(3):
                await self.export()
        except TimeoutError:
            pass
