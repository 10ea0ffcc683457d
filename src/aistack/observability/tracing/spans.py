"""A finished request's spans, encoded straight to OTLP JSON bytes.

Once per request, with only the attributes that say something: the SERVER span
carries the request (HTTP, who, how many attempts), each CLIENT span an upstream call
(model, provider, usage, finish, time to first chunk). Attributes whose values repeat
are encoded once and reused; export only joins bytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import orjson

from aistack.core.operations import Operation
from aistack.routing.router import Attempt
from aistack.service import RequestContext

SERVER, CLIENT = 2, 3  # OTLP span kinds
OK, ERROR = 1, 2  # OTLP status codes

# The GenAI semantic conventions' operation names (gen_ai.operation.name).
OPERATIONS = {
    Operation.CHAT: "chat",
    Operation.COMPLETION: "text_completion",
    Operation.EMBED: "embeddings",
    Operation.IMAGE: "generate_content",
}


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


def attributes(d: Mapping[str, object], fresh: frozenset[str] = frozenset()) -> bytes:
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


class Finished:
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


class SpanEncoder:
    """Encodes a finished request's spans; remembers the attributes spans share."""

    def __init__(self, langfuse: bool = False) -> None:
        self.langfuse = langfuse
        self._statics: dict[tuple[object, ...], bytes] = {}
        # Monotonic ns -> unix ns, fixed once: spans need wall time, requests measure
        # with the monotonic clock.
        self._offset = time.time_ns() - time.monotonic_ns()

    def encode(self, op: str, ctx: Finished, out: Callable[[bytes], None]) -> None:
        """The request's spans, each passed to `out`: its SERVER span, one per failed
        attempt, and the answer's."""
        trace_id = ctx.trace_id or _hex(128)
        server_id = _hex(64)
        out(self._server_span(ctx, op, trace_id, server_id))
        for a in ctx.failed or ():
            out(self._failed_span(ctx, a, op, trace_id, server_id))
        if ctx.deployment is not None and ctx.attempt_ns:
            out(self._answer_span(ctx, op, trace_id, server_id))

    def _static(self, key: tuple[object, ...], attrs: Mapping[str, object]) -> bytes:
        """The encoded attributes a span shares with every span of the same shape."""
        enc = self._statics.get(key)
        if enc is None:
            enc = attributes(attrs)
            if len(self._statics) < _SEEN_MAX:
                self._statics[key] = enc
        return enc

    def _server_span(self, ctx: Finished, op: str, trace_id: str, span_id: str) -> bytes:
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
                "langfuse.trace.name": f"{op} {ctx.model}" if self.langfuse else None,
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

    def _failed_span(self, ctx: Finished, a: Attempt, op: str, trace_id: str, parent: str) -> bytes:
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
            trace_id, parent, f"{op} {model}", start, end, attributes(attrs), ERROR, a.message
        )

    def _provider(self, ctx: Finished, backend: str) -> str:
        dep = ctx.deployment
        if dep is not None and dep.backend.name == backend:
            return dep.backend.kind
        return backend

    def _answer_span(self, ctx: Finished, op: str, trace_id: str, parent: str) -> bytes:
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
        if self.langfuse:
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

    def _langfuse(self, ctx: Finished, op: str, model: str) -> bytes:
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
        return attributes(attrs, _FRESH)

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
