"""OpenTelemetry traces following the GenAI conventions, exported over OTLP/HTTP (JSON).

One SERVER span per request and one CLIENT span per upstream attempt under it, so
retries and fallbacks show as siblings: the failed ones with their error, the one that
answered with its usage, finish reason and time to first chunk. Langfuse reads the
same spans (its OTLP endpoint, Basic auth) and the `langfuse.observation.*` attributes
on the answering span make it a generation with usage and cost.

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
import base64
import logging
import os
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from aistack import __version__
from aistack.backends.transport import HttpClient, Timeouts, TransportError, parse_url
from aistack.routing.router import Attempt
from aistack.service import RequestContext

log = logging.getLogger("aistack.tracing")

SERVER, CLIENT = 2, 3  # OTLP span kinds
OK, ERROR = 1, 2  # OTLP status codes

_OPERATIONS = {
    "chat": "chat",
    "chat_completions": "chat",
    "generate": "text_completion",
    "completions": "text_completion",
    "embed": "embeddings",
    "embeddings": "embeddings",
}


@dataclass(frozen=True, slots=True)
class TraceSettings:
    endpoint: str  # the full traces URL
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "aistack"
    resource: tuple[tuple[str, str], ...] = ()
    sample_ratio: float = 1.0
    capture_content: bool = False
    langfuse: bool = False
    batch_size: int = 512
    queue_size: int = 20_000
    interval: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)


def _pairs(raw: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in raw.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out.append((unquote(k.strip()), unquote(v.strip())))
    return tuple(out)


def settings_from_env(
    env: Mapping[str, str],
    *,
    capture_content: bool = False,
    langfuse_host: str | None = None,
    langfuse_public_key: str | None = None,
    langfuse_secret_key: str | None = None,
) -> TraceSettings | None:
    """Tracing settings from the OTEL_* variables (and a Langfuse section); None: off."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return None
    headers = _pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    headers += _pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""))
    langfuse = False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if langfuse_host:
        langfuse = True
        endpoint = langfuse_host.rstrip("/") + "/api/public/otel/v1/traces"
        token = base64.b64encode(
            f"{langfuse_public_key or ''}:{langfuse_secret_key or ''}".encode()
        ).decode()
        headers += (("Authorization", f"Basic {token}"), ("x-langfuse-ingestion-version", "4"))
    if not endpoint:
        return None
    ratio = 1.0
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        ratio = 0.0
    elif sampler.endswith("traceidratio"):
        try:
            ratio = min(1.0, max(0.0, float(env.get("OTEL_TRACES_SAMPLER_ARG", "1"))))
        except ValueError:
            ratio = 1.0
    return TraceSettings(
        endpoint=endpoint,
        headers=headers,
        service_name=env.get("OTEL_SERVICE_NAME", "aistack"),
        resource=_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        sample_ratio=ratio,
        capture_content=capture_content,
        langfuse=langfuse,
    )


def parse_traceparent(v: bytes | None) -> tuple[str, str]:
    """W3C `traceparent`: 00-<32 hex trace id>-<16 hex parent id>-<flags>."""
    if not v:
        return "", ""
    parts = v.decode("latin-1").strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return "", ""
    try:
        int(parts[1], 16)
        int(parts[2], 16)
    except ValueError:
        return "", ""
    if parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return "", ""
    return parts[1], parts[2]


def _attr(key: str, v: object) -> dict[str, Any]:
    if isinstance(v, bool):
        val: dict[str, Any] = {"boolValue": v}
    elif isinstance(v, int):
        val = {"intValue": str(v)}
    elif isinstance(v, float):
        val = {"doubleValue": v}
    elif isinstance(v, list | tuple):
        val = {"arrayValue": {"values": [{"stringValue": str(x)} for x in v]}}
    else:
        val = {"stringValue": str(v)}
    return {"key": key, "value": val}


def _attrs(d: Mapping[str, object]) -> list[dict[str, Any]]:
    return [_attr(k, v) for k, v in d.items() if v is not None and v != ""]


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
        self.queue: deque[dict[str, Any]] = deque()
        self.exported = 0
        self.dropped = 0
        self.failed_batches = 0
        # Monotonic ns -> unix ns, fixed once: spans need wall time, requests measure
        # with the monotonic clock.
        self._offset = time.time_ns() - time.monotonic_ns()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._scope = {"name": "aistack", "version": __version__}
        self._resource = {
            "attributes": _attrs(
                {
                    "service.name": settings.service_name,
                    "service.version": __version__,
                    **dict(settings.resource),
                }
            )
        }

    # -- building spans (at the end of each request)

    def _ts(self, mono_ns: int) -> str:
        return str(mono_ns + self._offset)

    def observe(self, ctx: RequestContext) -> None:
        op = _OPERATIONS.get(ctx.route)
        if op is None or not ctx.model:
            return  # traces are for model requests, not model lists or probes
        trace_id = ctx.trace_id or os.urandom(16).hex()
        sampled_out = random.random() >= self.settings.sample_ratio  # noqa: S311  # sampling
        if not ctx.trace_id and sampled_out:
            return
        server_id = os.urandom(8).hex()
        spans = [self._server_span(ctx, op, trace_id, server_id)]
        spans.extend(self._failed_span(ctx, a, op, trace_id, server_id) for a in ctx.failed or ())
        if ctx.deployment is not None and ctx.attempt_ns:
            spans.append(self._answer_span(ctx, op, trace_id, server_id))
        if len(self.queue) + len(spans) > self.settings.queue_size:
            self.dropped += len(spans)
            return
        self.queue.extend(spans)
        if len(self.queue) >= self.settings.batch_size:
            self._wake.set()

    def _failed_span(
        self, ctx: RequestContext, a: Attempt, op: str, trace_id: str, parent: str
    ) -> dict[str, Any]:
        model = a.deployment.split("/", 1)[-1]
        attrs = {
            "gen_ai.operation.name": op,
            "gen_ai.request.model": model,
            "gen_ai.provider.name": self._provider(ctx, a.backend),
            "aistack.backend": a.backend,
            "error.type": a.error,
            "http.response.status_code": a.status or None,
        }
        start = a.started_ns or ctx.started_ns
        end = a.ended_ns or ctx.end_ns
        return self._span(trace_id, parent, f"{op} {model}", start, end, attrs, ERROR, a.message)

    def _provider(self, ctx: RequestContext, backend: str) -> str:
        dep = ctx.deployment
        if dep is not None and dep.backend.name == backend:
            return dep.backend.kind
        return backend

    def _common(self, ctx: RequestContext, op: str) -> dict[str, object]:
        u = ctx.usage
        ttft = (ctx.first_ns - ctx.started_ns) / 1e9 if ctx.first_ns else None
        return {
            "gen_ai.operation.name": op,
            "gen_ai.request.model": ctx.model,
            "gen_ai.response.model": ctx.upstream_model or None,
            "gen_ai.request.stream": ctx.stream,
            "gen_ai.usage.input_tokens": u.prompt_tokens if u else None,
            "gen_ai.usage.output_tokens": u.completion_tokens if u else None,
            "gen_ai.response.finish_reasons": [ctx.finish] if ctx.finish else None,
            "gen_ai.response.time_to_first_chunk": ttft,
        }

    def _server_span(
        self, ctx: RequestContext, op: str, trace_id: str, span_id: str
    ) -> dict[str, Any]:
        attrs = self._common(ctx, op)
        attrs.update(
            {
                "http.request.method": ctx.method,
                "url.path": ctx.path,
                "http.response.status_code": ctx.status,
                "aistack.request_id": ctx.request_id,
                "aistack.dialect": ctx.dialect,
                "aistack.app": ctx.app or None,
                "aistack.attempts": ctx.attempts,
                "aistack.fallbacks": ctx.fallbacks,
                "user.id": ctx.end_user or ctx.app or None,
                "error.type": ctx.error or None,
            }
        )
        if self.settings.langfuse:
            attrs["langfuse.trace.name"] = f"{op} {ctx.model}"
        if self.settings.capture_content and ctx.request is not None:
            attrs["gen_ai.input.messages"] = _input_messages(ctx.request)
            if ctx.output is not None:
                text = "".join(ctx.output)
                attrs["gen_ai.output.messages"] = _messages([("assistant", text)])
        status = ERROR if ctx.error or ctx.status >= 500 else OK
        return self._span(
            trace_id,
            ctx.parent_span_id,
            f"{op} {ctx.model}",
            ctx.started_ns,
            ctx.end_ns,
            attrs,
            status,
            ctx.error,
            kind=SERVER,
            span_id=span_id,
        )

    def _answer_span(
        self, ctx: RequestContext, op: str, trace_id: str, parent: str
    ) -> dict[str, Any]:
        dep = ctx.deployment
        assert dep is not None
        attrs = self._common(ctx, op)
        attrs.update(
            {
                "gen_ai.request.model": dep.model,
                "gen_ai.provider.name": dep.backend.kind,
                "server.address": getattr(getattr(dep.backend, "endpoint", None), "host", None),
                "aistack.backend": dep.backend.name,
                "error.type": ctx.error or None,
            }
        )
        if self.settings.langfuse:
            u = ctx.usage
            attrs["langfuse.observation.type"] = "embedding" if op == "embeddings" else "generation"
            attrs["langfuse.observation.model.name"] = dep.model
            if u is not None:
                attrs["langfuse.observation.usage_details"] = orjson.dumps(
                    {"input": u.prompt_tokens, "output": u.completion_tokens}
                ).decode()
                if u.cost is not None:
                    attrs["langfuse.observation.cost_details"] = orjson.dumps(
                        {"total": u.cost}
                    ).decode()
            if ctx.first_ns:
                ts = (ctx.first_ns + self._offset) / 1e9
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
                frac = int(ts % 1 * 1e6)
                attrs["langfuse.observation.completion_start_time"] = f"{stamp}.{frac:06d}Z"
        status = ERROR if ctx.error else OK
        return self._span(
            trace_id,
            parent,
            f"{op} {dep.model}",
            ctx.attempt_ns,
            ctx.end_ns,
            attrs,
            status,
            ctx.error,
        )

    def _span(
        self,
        trace_id: str,
        parent: str,
        name: str,
        start: int,
        end: int,
        attrs: Mapping[str, object],
        status: int,
        message: str = "",
        *,
        kind: int = CLIENT,
        span_id: str = "",
    ) -> dict[str, Any]:
        span: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": span_id or os.urandom(8).hex(),
            "name": name,
            "kind": kind,
            "startTimeUnixNano": self._ts(start),
            "endTimeUnixNano": self._ts(max(start, end)),
            "attributes": _attrs(attrs),
            "status": {"code": status, **({"message": message} if message else {})},
        }
        if parent:
            span["parentSpanId"] = parent
        return span

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
        while self.queue:
            n = min(len(self.queue), self.settings.batch_size)
            batch = [self.queue.popleft() for _ in range(n)]
            body = orjson.dumps(
                {
                    "resourceSpans": [
                        {
                            "resource": self._resource,
                            "scopeSpans": [{"scope": self._scope, "spans": batch}],
                        }
                    ]
                }
            )
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


def _messages(pairs: list[tuple[str, str]]) -> str:
    """GenAI semantic-convention messages: role and text parts, as a JSON string."""
    return orjson.dumps(
        [{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in pairs]
    ).decode()


def _input_messages(request: object) -> str:
    messages = getattr(request, "messages", None)
    if messages is not None:
        return _messages([(m.role, m.content) for m in messages])
    prompt = getattr(request, "prompt", None)
    if prompt is not None:
        return _messages([("user", prompt)])
    inputs = getattr(request, "inputs", None)
    return orjson.dumps(list(inputs or ())).decode()
