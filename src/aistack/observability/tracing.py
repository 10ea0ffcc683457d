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
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import orjson

from aistack import __version__
from aistack.backends.transport import HttpClient, Timeouts, TransportError, parse_url
from aistack.core.operations import Operation
from aistack.routing.router import Attempt
from aistack.service import RequestContext

log = logging.getLogger("aistack.tracing")

SERVER, CLIENT = 2, 3  # OTLP span kinds
OK, ERROR = 1, 2  # OTLP status codes

# The GenAI semantic conventions' operation names (gen_ai.operation.name).
_OPERATIONS = {
    Operation.CHAT: "chat",
    Operation.COMPLETION: "text_completion",
    Operation.EMBED: "embeddings",
    Operation.IMAGE: "generate_content",
}


# Encoded spans per POST at most (~64 spans of ~500 bytes). The body goes out in one write
# on the event loop's thread, and on loopback the kernel delivers it to the receiver in
# that same call: the 512 spans (250 KB) of OpenTelemetry's default batch held the loop
# for long enough to show in the c=1 tail (p99 0.84-1.68 ms against 0.52-0.80 ms with 64
# spans a POST and 0.52-0.66 ms with tracing off; 4,096 spans a POST: 2.1-3.8 ms).
# See docs/performance.md.
_BATCH_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class TraceSettings:
    endpoint: str  # the full traces URL
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "aistack"
    resource: tuple[tuple[str, str], ...] = ()
    sample_ratio: float = 1.0
    capture_content: bool = False
    langfuse: bool = False
    batch_size: int = 512  # spans per POST at most
    batch_bytes: int = _BATCH_BYTES  # and encoded bytes per POST at most (one span at least)
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


# Seconds of span encoding between two turns of the event loop: a request that arrives
# meanwhile waits at most about this long (c=1 p99 in docs/performance.md).
_SLICE_S = 0.00005
_dumps = orjson.dumps
_KEYS: dict[str, bytes] = {}
# Encoded attributes whose values repeat (operation, model, backend, path, app, status):
# most of a span's attributes are found here instead of being encoded again.
_SEEN: dict[tuple[str, object], bytes] = {}
_SEEN_MAX = 50_000


def _kv(key: str, v: object) -> bytes:
    """One OTLP JSON attribute, as bytes: `{"key":K,"value":{"<type>Value":V}}`."""
    head = _KEYS.get(key)
    if head is None:
        head = _KEYS[key] = b'{"key":' + _dumps(key) + b',"value":{'
    if isinstance(v, str):
        return head + b'"stringValue":' + _dumps(v) + b"}}"
    if isinstance(v, bool):
        return head + (b'"boolValue":true}}' if v else b'"boolValue":false}}')
    if isinstance(v, int):
        return head + b'"intValue":"' + str(v).encode() + b'"}}'
    if isinstance(v, float):
        return head + b'"doubleValue":' + _dumps(v) + b"}}"
    values = b",".join(b'{"stringValue":' + _dumps(str(x)) + b"}" for x in v)  # type: ignore[attr-defined]
    return head + b'"arrayValue":{"values":[' + values + b"]}}}"


def _kv_cached(key: str, v: object) -> bytes:
    kv = _SEEN.get((key, v))
    if kv is None:
        kv = _kv(key, v)
        if len(_SEEN) < _SEEN_MAX:
            _SEEN[(key, v)] = kv
    return kv


def _attrs(d: Mapping[str, object], fresh: frozenset[str] = frozenset()) -> bytes:
    """Attributes whose value is set (None and "" are left out), comma-joined. Keys in
    `fresh` have values that rarely repeat (ids, counts, durations): not cached."""
    return b",".join(
        [
            _kv(k, v) if k in fresh else _kv_cached(k, v)
            for k, v in d.items()
            if v is not None and v != ""
        ]
    )


_FRESH = frozenset(
    {
        "aistack.request_id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
        "langfuse.observation.completion_start_time",
    }
)


def _hex(bits: int) -> str:
    # Span ids need uniqueness, not secrecy: no syscall per id.
    return f"{random.getrandbits(bits):0{bits // 4}x}"


class _Done:
    """What a finished request's spans need, copied from its context at its end.

    The context itself is not kept: it holds the whole request (a prompt can be
    megabytes) and thousands can wait for export.
    """

    __slots__ = (
        "app", "attempt_ns", "attempts", "captured_in", "captured_out", "deployment",
        "dialect", "end_ns", "end_user", "error", "failed", "fallbacks", "finish",
        "first_ns", "method", "model", "parent_span_id", "path", "request_id",
        "started_ns", "status", "stream", "trace_id", "usage",
    )  # fmt: skip

    def __init__(self, c: RequestContext, capture: bool) -> None:
        self.app = c.app
        self.attempt_ns = c.attempt_ns
        self.attempts = c.attempts
        self.deployment = c.deployment
        self.dialect = c.dialect
        self.end_ns = c.end_ns
        self.end_user = c.end_user
        self.error = c.error
        self.failed = c.failed
        self.fallbacks = c.fallbacks
        self.finish = c.finish
        self.first_ns = c.first_ns
        self.method = c.method
        self.model = c.model
        self.parent_span_id = c.parent_span_id
        self.path = c.path
        self.request_id = c.request_id
        self.started_ns = c.started_ns
        self.status = c.status
        self.stream = c.stream
        self.trace_id = c.trace_id
        self.usage = c.usage
        self.captured_in: str | None = None
        self.captured_out: str | None = None
        if capture and c.request is not None:
            self.captured_in = _input_messages(c.request)
            if c.output is not None:
                self.captured_out = _messages([("assistant", "".join(c.output))])


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
        self.pending: deque[tuple[str, _Done]] = deque()
        self.queue: deque[bytes] = deque()
        self._statics: dict[tuple[object, ...], bytes] = {}
        self.exported = 0
        self.dropped = 0
        self.failed_batches = 0
        # Monotonic ns -> unix ns, fixed once: spans need wall time, requests measure
        # with the monotonic clock.
        self._offset = time.time_ns() - time.monotonic_ns()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        resource = _attrs(
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

    # -- building spans (at the end of each request)
    #
    # Spans are encoded straight to OTLP JSON bytes here, once, with only the attributes
    # that say something: the SERVER span carries the request (HTTP, who, how many
    # attempts), each CLIENT span an upstream call (model, provider, usage, finish,
    # time to first chunk). A few microseconds a request; export only joins bytes.

    def observe(self, ctx: RequestContext) -> None:
        """Keep what the spans need (a small copy, not the request); encode it later.

        Encoding is left to the export task, which does a whole batch in one tight loop:
        measured here, that costs half of encoding each request as it ends, and the
        request's own task is done sooner.
        """
        op = _OPERATIONS.get(ctx.operation)
        if op is None or not ctx.model:
            return  # traces are for model requests, not model lists or probes
        ratio = self.settings.sample_ratio
        if not ctx.trace_id and ratio < 1.0 and random.random() >= ratio:  # noqa: S311
            return  # sampled out (a caller's trace is always followed)
        if len(self.pending) >= self.settings.queue_size:
            self.dropped += 2
            return
        self.pending.append((op, _Done(ctx, self.settings.capture_content)))
        if len(self.pending) >= self.settings.batch_size:
            self._wake.set()

    def _encode_pending(self, until: float) -> None:
        """Encode waiting requests' spans until `until` (perf_counter), at least one."""
        pending = self.pending
        queue = self.queue
        clock = time.perf_counter
        while pending:
            op, ctx = pending.popleft()
            trace_id = ctx.trace_id or _hex(128)
            server_id = _hex(64)
            queue.append(self._server_span(ctx, op, trace_id, server_id))
            for a in ctx.failed or ():
                queue.append(self._failed_span(ctx, a, op, trace_id, server_id))
            if ctx.deployment is not None and ctx.attempt_ns:
                queue.append(self._answer_span(ctx, op, trace_id, server_id))
            if clock() >= until:
                return

    def _static(self, key: tuple[object, ...], attrs: Mapping[str, object]) -> bytes:
        """The encoded attributes a span shares with every span of the same shape."""
        enc = self._statics.get(key)
        if enc is None:
            enc = _attrs(attrs)
            if len(self._statics) < _SEEN_MAX:
                self._statics[key] = enc
        return enc

    def _server_span(self, ctx: _Done, op: str, trace_id: str, span_id: str) -> bytes:
        user = ctx.end_user or ctx.app
        key = ("s", op, ctx.model, ctx.method, ctx.path, ctx.status, ctx.dialect, ctx.app, user)
        static = self._static(
            key,
            {
                "gen_ai.operation.name": op,
                "gen_ai.request.model": ctx.model,
                "http.request.method": ctx.method,
                "url.path": ctx.path,
                "http.response.status_code": ctx.status,
                "aistack.dialect": ctx.dialect,
                "aistack.app": ctx.app,
                "user.id": user,
                "langfuse.trace.name": f"{op} {ctx.model}" if self.settings.langfuse else None,
            },
        )
        parts = [static, _kv("aistack.request_id", ctx.request_id)]
        if ctx.attempts > 1:
            parts.append(_kv("aistack.attempts", ctx.attempts))
        if ctx.fallbacks:
            parts.append(_kv("aistack.fallbacks", ctx.fallbacks))
        if ctx.error:
            parts.append(_kv_cached("error.type", ctx.error))
        if ctx.captured_in is not None:
            parts.append(_kv("gen_ai.input.messages", ctx.captured_in))
        if ctx.captured_out is not None:
            parts.append(_kv("gen_ai.output.messages", ctx.captured_out))
        status = ERROR if ctx.error or ctx.status >= 500 else OK
        return self._span(
            trace_id, ctx.parent_span_id, f"{op} {ctx.model}", ctx.started_ns, ctx.end_ns,
            b",".join(parts), status, ctx.error, kind=SERVER, span_id=span_id,
        )  # fmt: skip

    def _failed_span(self, ctx: _Done, a: Attempt, op: str, trace_id: str, parent: str) -> bytes:
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
        return self._span(
            trace_id, parent, f"{op} {model}", start, end, _attrs(attrs), ERROR, a.message
        )

    def _provider(self, ctx: _Done, backend: str) -> str:
        dep = ctx.deployment
        if dep is not None and dep.backend.name == backend:
            return dep.backend.kind
        return backend

    def _answer_span(self, ctx: _Done, op: str, trace_id: str, parent: str) -> bytes:
        dep = ctx.deployment
        assert dep is not None
        b = dep.backend
        key = ("a", op, b.name, dep.model, ctx.stream, ctx.finish)
        static = self._static(
            key,
            {
                "gen_ai.operation.name": op,
                "gen_ai.provider.name": b.kind,
                "gen_ai.request.model": dep.model,
                "gen_ai.response.model": dep.model,
                "gen_ai.request.stream": ctx.stream,
                "gen_ai.response.finish_reasons": (ctx.finish,) if ctx.finish else None,
                "server.address": self._address(b),
                "aistack.backend": b.name,
            },
        )
        parts = [static]
        u = ctx.usage
        if u is not None:
            parts.append(_kv("gen_ai.usage.input_tokens", u.prompt_tokens))
            parts.append(_kv("gen_ai.usage.output_tokens", u.completion_tokens))
        if ctx.first_ns:
            ttft = (ctx.first_ns - ctx.started_ns) / 1e9
            parts.append(_kv("gen_ai.response.time_to_first_chunk", ttft))
        if ctx.error:
            parts.append(_kv_cached("error.type", ctx.error))
        if self.settings.langfuse:
            parts.append(self._langfuse(ctx, op, dep.model))
        status = ERROR if ctx.error else OK
        return self._span(
            trace_id, parent, f"{op} {dep.model}", ctx.attempt_ns, ctx.end_ns,
            b",".join(parts), status, ctx.error,
        )  # fmt: skip

    @staticmethod
    def _address(backend: object) -> str | None:
        endpoint = getattr(backend, "endpoint", None)
        return getattr(endpoint, "host", None)

    def _langfuse(self, ctx: _Done, op: str, model: str) -> bytes:
        kind = "embedding" if op == "embeddings" else "generation"
        attrs: dict[str, object] = {
            "langfuse.observation.type": kind,
            "langfuse.observation.model.name": model,
        }
        u = ctx.usage
        if u is not None:
            usage = {"input": u.prompt_tokens, "output": u.completion_tokens}
            attrs["langfuse.observation.usage_details"] = _dumps(usage).decode()
            if u.cost is not None:
                attrs["langfuse.observation.cost_details"] = _dumps({"total": u.cost}).decode()
        if ctx.first_ns:
            ts = (ctx.first_ns + self._offset) / 1e9
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
            frac = int(ts % 1 * 1e6)
            attrs["langfuse.observation.completion_start_time"] = f"{stamp}.{frac:06d}Z"
        return _attrs(attrs, _FRESH)

    def _span(
        self,
        trace_id: str,
        parent: str,
        name: str,
        start: int,
        end: int,
        attrs: bytes,
        status: int,
        message: str = "",
        *,
        kind: int = CLIENT,
        span_id: str = "",
    ) -> bytes:
        off = self._offset
        head = (
            f'{{"traceId":"{trace_id}","spanId":"{span_id or _hex(64)}",'
            + (f'"parentSpanId":"{parent}",' if parent else "")
            + f'"kind":{kind},"startTimeUnixNano":"{start + off}",'
            f'"endTimeUnixNano":"{max(start, end) + off}","name":'
        ).encode()
        st = b'{"code":%d' % status
        if message:
            st += b',"message":' + _dumps(message)
        return head + _dumps(name) + b',"attributes":[' + attrs + b'],"status":' + st + b"}}"

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
