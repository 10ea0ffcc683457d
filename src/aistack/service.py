"""The service: resolve a model, route it, measure the answer. No HTTP in here.

`chat` and `generate` return an `Answer` once some deployment has produced its first
chunk: the router (routing/router.py) retries and falls back until then, so everything
that can fail before the caller sees a byte is either recovered here or fails as an
error with a status. The answer then yields chunks; the final one always carries usage
and Ollama's durations (measured here when the backend does not give them).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from msgspec.structs import replace

from aistack import __version__
from aistack.access.gate import Admin, Gate, KeyInfo
from aistack.access.responses import StoredResponses
from aistack.backends.base import Backend, ChunkStream, loaded_models
from aistack.backends.ollama import OllamaConfig
from aistack.backends.tokens import CountsTokens
from aistack.backends.transport import HttpClient
from aistack.config import Config
from aistack.core.chat import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Message,
    estimate_tokens,
)
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk, Timings, Usage, collect
from aistack.core.models import LoadedModel, ModelShow, canonical, check_name
from aistack.core.operations import Operation
from aistack.limits.base import Ticket
from aistack.routing.catalog import Catalog, Deployment, Listed
from aistack.routing.health import HealthMonitor
from aistack.routing.router import Attempt, Route, Router
from aistack.routing.state import Slot

log = logging.getLogger("aistack.service")

# What /api/version reports: clients parse it as Ollama's and need a real-looking one.
OLLAMA_COMPAT_VERSION = "0.13.0"


@dataclass(slots=True)
class RequestContext:
    """One caller request, from its first byte to its last: who, what, and how it went.

    The HTTP layer creates it and hands it to `Gateway.finish` when the request is over
    (answered, failed, or abandoned by its client); observers (the usage ledger,
    metrics, logs) read it there. Filling it costs a few attribute writes, nothing more.
    """

    dialect: str  # the route's: "ollama" | "openai" | "anthropic" | "qdrant" | "plain"
    route: str  # the route's name: "chat" | "chat_completions" | "tags" | ...
    operation: Operation = Operation.NONE  # what the route does (the ledger, metrics...)
    request_id: str = ""
    started_ns: int = field(default_factory=time.monotonic_ns)
    method: str = ""
    path: str = ""
    # A W3C traceparent the caller sent: its trace id and the span to hang ours under.
    trace_id: str = ""
    parent_span_id: str = ""
    # Prompt and answer, kept only when tracing captures content (off by default).
    capture: bool = False
    request: object = None
    output: list[str] | None = None
    # Who asked: a key, the app it belongs to, the end user an app forwarded; or the
    # admin managing the gateway.
    key: KeyInfo | None = None
    key_id: str = ""
    app: str = ""
    end_user: str = ""
    admin: Admin | None = None
    # What the limits granted (a concurrency slot, tokens to charge), given back at the end.
    ticket: Ticket | None = None
    # What was asked, and who answered.
    model: str = ""
    stream: bool = False
    deployment: Deployment | None = None
    # Routing: deployments called (1 + retries), chain entries moved past (fallbacks,
    # including a jump to a longer-context model), and each failed attempt in order.
    attempts: int = 0
    fallbacks: int = 0
    failed: list[Attempt] | None = None
    attempt_ns: int = 0
    # A conversation the client named (X-Aistack-Session), for sticky models, and the
    # time the request spent waiting in line for a deployment.
    session: str = ""
    queued_ns: int = 0
    # How it went. `status` is the HTTP status sent (499: the client went away);
    # `error` the kind of failure, also for a stream that failed after its first byte.
    status: int = 0
    error: str = ""
    first_ns: int = 0
    end_ns: int = 0
    usage: Usage | None = None
    # The answer ended before its last chunk (its client went away, its backend broke,
    # the server cut it): `usage` is what was streamed until then (Answer.partial_usage).
    partial: bool = False
    finish: str = ""  # why the answer ended (stop, length, tool_calls, ...)
    # The answer in progress; `Gateway.finish` ends it if the route did not.
    answer: Answer | None = None
    # Image work: images made, the backend's time making them (ms), and whether the
    # ledger's row is written later, by whatever finishes the work (an image job).
    images: int = 0
    gpu_ms: float = 0.0
    deferred: bool = False
    # Vector work: the points an operation wrote or returned.
    points: int = 0

    @property
    def backend(self) -> str:
        return self.deployment.backend.name if self.deployment is not None else ""

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def upstream_model(self) -> str:
        return self.deployment.model if self.deployment is not None else ""


Observer = Callable[[RequestContext], None]


class Component(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Answer:
    """A backend's answer, its first chunk already in hand.

    Iterating yields every chunk; the final one is completed with measured timings and
    counted usage where the backend left them out.
    """

    __slots__ = (
        "_chars_in", "_chars_out", "_chunks", "_first", "_first_ns", "_router", "_slot",
        "_stream", "ctx", "deployment", "final", "requested",
    )  # fmt: skip

    def __init__(
        self,
        ctx: RequestContext,
        deployment: Deployment,
        requested: str,
        stream: ChunkStream,
        first: Chunk,
        first_ns: int,
        chars_in: int,
        router: Router | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.requested = requested
        self._stream = stream
        self._first: Chunk | None = first
        self._first_ns = first_ns
        self._chars_in = chars_in
        self._chars_out = 0
        self._chunks = 0  # chunks with text: a streaming backend sends about a token each
        self.final: Chunk | None = None
        # The deployment stays counted in flight until the answer ends, one way or another.
        self._router = router
        self._slot = slot
        ctx.answer = self

    @property
    def served_model(self) -> str:
        return self.deployment.model

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Chunk]:
        first = self._first
        self._first = None
        if first is not None:
            if first.finish is not None:
                self.release()
                yield self._complete(first)
                return
            self._seen(first)
            yield first
        try:
            async for c in self._stream:
                if c.finish is not None:
                    self.release()
                    yield self._complete(c)
                    return
                self._seen(c)
                yield c
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.deployment.backend.name}' ended the answer without finishing",
                backend=self.deployment.backend.name,
            )
        except GatewayError as e:
            slot, self._slot = self._slot, None
            if slot is not None and self._router is not None:
                self._router.broke(slot, e)
            raise

    def release(self, abandoned: bool = False) -> None:
        """The deployment is done with this answer (idempotent)."""
        slot, self._slot = self._slot, None
        if slot is not None and self._router is not None:
            if abandoned:
                self._router.abandoned(slot)
            else:
                self._router.finished(slot)

    def _seen(self, c: Chunk) -> None:
        n = len(c.content) + len(c.thinking)
        if n:
            self._chars_out += n
            self._chunks += 1
        out = self.ctx.output
        if out is not None and c.content:
            out.append(c.content)

    def _complete(self, c: Chunk) -> Chunk:
        self._seen(c)
        now = time.monotonic_ns()
        usage = c.usage
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            # The backend did not count; estimate (about four characters a token).
            usage = Usage(
                prompt_tokens=max(1, self._chars_in // 4) if self._chars_in else 0,
                completion_tokens=(self._chars_out + 3) // 4,
                cost=usage.cost if usage else None,
                estimated=True,
            )
        t = c.timings
        if t is None or t.total_ns == 0:
            start = self.ctx.started_ns
            t = Timings(
                total_ns=max(1, now - start),
                load_ns=max(1, (t.load_ns if t else 0)),
                prompt_eval_ns=max(1, self._first_ns - start),
                eval_ns=max(1, now - self._first_ns),
            )
        done = replace(c, usage=usage, timings=t, model=c.model or self.deployment.model)
        self.final = done
        self.ctx.usage = usage
        self.ctx.finish = done.finish or ""
        return done

    def partial_usage(self) -> Usage | None:
        """What an answer that ended before its last chunk had cost so far: the prompt
        and the text streamed until then, estimated (the backend counts only at the
        end), so a caller cannot escape its tokens per minute or its budget by leaving
        early. None when the answer did finish."""
        if self.final is not None:
            return None
        return Usage(
            prompt_tokens=max(1, self._chars_in // 4) if self._chars_in else 0,
            # About four characters a token, and at least a token a chunk.
            completion_tokens=max(self._chunks, (self._chars_out + 3) // 4),
            estimated=True,
        )

    async def collect(self) -> Chunk:
        first = self._first
        if first is not None and first.finish is not None:
            # A non-streamed answer is one final chunk: no need to iterate.
            self._first = None
            self.release()
            return collect((self._complete(first),))
        return collect([c async for c in self])

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self.release(abandoned=True)


def _chars_of_chat(req: ChatRequest) -> int:
    return sum(len(m.content) for m in req.messages)


def conversation(key: str, messages: tuple[Message, ...]) -> str:
    """Which conversation a request continues, for sticky models: its key and its first
    messages (the system prompt and the first user turn stay the same turn after turn)."""
    h = hashlib.blake2b(key.encode(), digest_size=12)
    for m in messages[:4]:
        if m.role in ("system", "developer", "user"):
            h.update(b"\x00" + m.role.encode() + b"\x00" + m.content[:2000].encode())
            if m.role == "user":
                break
    return h.hexdigest()


class Gateway:
    """Everything a request needs, passed in; the HTTP layer holds one of these."""

    def __init__(
        self,
        config: Config,
        backends: list[Backend],
        client: HttpClient,
        gate: Gate | None = None,
    ) -> None:
        self.config = config
        self.backends = {b.name: b for b in backends}
        self.client = client
        self.catalog = Catalog(
            backends,
            declared={c.name: c.models for c in config.backends},
            discover={c.name: c.discover for c in config.backends},
            aliases=config.aliases,
            ttl=config.models_ttl,
        )
        self.router = Router(self.catalog, backends, config.routing, config.backends)
        self.router.memory(
            {c.name: c.gpu for c in config.backends if c.gpu},
            {c.name: c.vram_bytes for c in config.backends if isinstance(c, OllamaConfig)},
        )
        self.health = HealthMonitor(
            backends,
            self.router,
            interval=config.routing.health.interval,
            timeout=config.routing.health.timeout,
            preload={c.name: c.preload for c in config.backends if isinstance(c, OllamaConfig)},
        )
        self.version = __version__
        self.started = False
        # Called with every finished request's context; must be quick and never block
        # (enqueue, count), since they run on the request's own task.
        self.observers: list[Observer] = []
        # Things with a life of their own (metrics polling, trace export): started after
        # the backends, closed before the ledger's last flush.
        self.components: list[Component] = []
        # Keys, limits and the usage ledger; None: no auth, nothing recorded.
        self.gate = gate
        if gate is not None:
            self.observers.append(gate.observe)
        # OpenAI Responses kept with `store: true`, where the keys and the ledger are.
        self.responses = StoredResponses(gate.store if gate is not None else None)

    def finish(self, ctx: RequestContext) -> None:
        ctx.end_ns = time.monotonic_ns()
        answer = ctx.answer
        if answer is not None:
            answer.release(abandoned=True)  # a no-op unless the route forgot to close it
            ctx.answer = None
            if ctx.usage is None:  # it ended early: booked with what it streamed
                ctx.usage = answer.partial_usage()
                ctx.partial = ctx.usage is not None
        for observe in self.observers:
            try:
                observe(ctx)
            except Exception:
                log.exception("request observer failed")

    async def start(self) -> None:
        if self.gate is not None:
            await self.gate.start()
        for b in self.backends.values():
            await b.start()
        await self.catalog.start()
        await self.health.start()
        for c in self.components:
            await c.start()
        self.started = True

    def ready(self) -> tuple[bool, str]:
        """Whether to send this replica traffic, and why not."""
        if not self.started:
            return False, "starting"
        if not self.backends:
            return False, "no backends configured"
        if not self.catalog.refreshed:
            return False, "discovering models"
        if not any(h.up for h in self.router.health.values()):
            return False, "every backend is down"
        return True, "ready"

    async def close(self) -> None:
        self.started = False
        await self.health.close()
        for c in reversed(self.components):
            try:
                await c.close()
            except Exception:
                log.exception("closing %s failed", type(c).__name__)
        await self.catalog.close()
        if self.gate is not None:
            # Every request has ended (the server cut what outran its grace): their rows
            # are written now, before anything native (the embedded engine) is torn down.
            await self.gate.flush()
        for b in self.backends.values():
            try:
                await b.close()
            except Exception:
                log.exception("closing backend %s failed", b.name)
        await self.client.aclose()
        if self.gate is not None:
            # Last: the ledger writes the rows of anything that finished since.
            await self.gate.close()

    # -- access

    async def admit(self, ctx: RequestContext, model: str) -> None:
        """403 when the caller's key may not use `model`, 429 over its limits or budget."""
        if self.gate is not None and ctx.key is not None and ctx.key.restricted:
            await self.gate.admit(ctx, model, self.catalog.aliases)

    def visible(self, ctx: RequestContext, name: str) -> bool:
        """Whether model lists show `name` to this caller (its key's allowlist)."""
        return self.gate is None or self.gate.visible(ctx, name, self.catalog.aliases)

    def check_visible(self, ctx: RequestContext, name: str) -> None:
        """A 403, as for inference, when the caller's key may not use `name`: describing
        a model (/api/show, /v1/models/{id}) follows the same allowlist as using it."""
        if not self.visible(ctx, name):
            key = ctx.key.name if ctx.key is not None else ""
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                f"API key '{key}' may not use model '{name}'",
                param="model",
                code="model_not_allowed",
            )

    def shown(self, ctx: RequestContext | None) -> Callable[[str], bool] | None:
        """What a 404's "did you mean" may name to this caller: its key's models."""
        if ctx is None or ctx.key is None or not ctx.key.restricted:
            return None
        return lambda name: self.visible(ctx, name)

    # -- inference

    async def _route(self, model: str, ctx: RequestContext | None = None) -> Route:
        route = self.router.route(model)
        if route is None:
            # Only names nobody serves are worth checking: a 400 for a malformed one.
            check_name(model)
            shown = self.shown(ctx)
            await self.catalog.lookup(model, shown)  # asks the backends again, or a 404
            route = self.router.route(model)
            if route is None:
                raise self.catalog.not_found(model, shown)
        return route

    async def _open(
        self,
        ctx: RequestContext,
        route: Route,
        requested: str,
        call: Callable[[Deployment], Awaitable[ChunkStream]],
        chars_in: int,
    ) -> Answer:
        ctx.model = requested

        async def first_chunk(dep: Deployment) -> tuple[ChunkStream, Chunk]:
            stream = await call(dep)
            try:
                return stream, await stream.__anext__()
            except StopAsyncIteration:
                await stream.aclose()
                raise GatewayError(
                    ErrorKind.UPSTREAM_FAILED,
                    f"backend '{dep.backend.name}' answered nothing",
                    backend=dep.backend.name,
                ) from None
            except BaseException:
                await stream.aclose()
                raise

        slot, (stream, first) = await self.router.run(route, first_chunk, ctx)
        ctx.first_ns = time.monotonic_ns()
        return Answer(
            ctx, slot.dep, requested, stream, first, ctx.first_ns, chars_in, self.router, slot
        )

    async def chat(self, ctx: RequestContext, req: ChatRequest) -> Answer:
        ctx.stream = req.stream
        ctx.model = req.model
        await self.admit(ctx, req.model)
        route = await self._route(req.model, ctx)
        if route.defaults is not None:
            req = route.defaults.chat(req)
        if route.sticky and not ctx.session:
            ctx.session = conversation(ctx.key_id, req.messages)
        chat = req
        return await self._open(
            ctx, route, req.model, lambda d: d.backend.chat(chat, d.model), _chars_of_chat(req)
        )

    async def generate(self, ctx: RequestContext, req: GenerateRequest) -> Answer:
        ctx.stream = req.stream
        ctx.model = req.model
        await self.admit(ctx, req.model)
        route = await self._route(req.model, ctx)
        if route.defaults is not None:
            req = route.defaults.generate(req)
        if route.sticky and not ctx.session:
            system = Message(role="system", content=req.system)
            user = Message(role="user", content=req.prompt)
            ctx.session = conversation(ctx.key_id, (system, user))
        gen = req
        return await self._open(
            ctx,
            route,
            req.model,
            lambda d: d.backend.generate(gen, d.model),
            len(req.prompt) + len(req.system),
        )

    async def embed(self, ctx: RequestContext, req: EmbedRequest) -> EmbedResult:
        ctx.model = req.model
        await self.admit(ctx, req.model)
        route = await self._route(req.model, ctx)
        if route.defaults is not None:
            req = route.defaults.embed(req)
        t = time.monotonic_ns()

        async def call(dep: Deployment) -> EmbedResult:
            return await dep.backend.embed(req, dep.model)

        slot, result = await self.router.run(route, call, ctx)
        self.router.finished(slot)
        if not result.total_ns:
            result = replace(result, total_ns=max(1, time.monotonic_ns() - t))
        if not result.prompt_tokens and req.inputs:
            result = replace(result, prompt_tokens=max(1, sum(len(s) for s in req.inputs) // 4))
        ctx.first_ns = time.monotonic_ns()
        ctx.usage = Usage(prompt_tokens=result.prompt_tokens)
        return result

    async def count_tokens(self, ctx: RequestContext, req: ChatRequest) -> tuple[int, bool]:
        """The prompt's tokens, and whether exactly: the backend's own count where it has
        one (an Anthropic backend), else an estimate. Not model work: nothing is metered,
        but the key's allowlist applies."""
        ctx.model = req.model
        self.check_visible(ctx, req.model)
        dep = self.router.first_available(await self._route(req.model))
        if dep is not None and isinstance(dep.backend, CountsTokens):
            ctx.deployment = dep
            try:
                return await dep.backend.count_tokens(req, dep.model), True
            except GatewayError as e:
                log.info("backend %s cannot count tokens: %s", dep.backend.name, e.message)
        return estimate_tokens(req), False

    # -- models

    async def listed(self) -> list[Listed]:
        await self.catalog.first_round()
        return self.catalog.listed()

    async def show(
        self, model: str, ctx: RequestContext | None = None
    ) -> tuple[ModelShow, Deployment]:
        dep = self.router.first_available(await self._route(model, ctx))
        if dep is None:
            raise self.catalog.not_found(model, self.shown(ctx))
        return await dep.backend.show(dep.card), dep

    async def ps(self) -> list[tuple[str, LoadedModel]]:
        import asyncio

        async def one(b: Backend) -> list[LoadedModel]:
            try:
                return await loaded_models(b)
            except GatewayError as e:
                log.warning("cannot list loaded models of backend %s: %s", b.name, e.message)
                return []

        results = await asyncio.gather(*(one(b) for b in self.backends.values()))
        out = [(canonical(m.name), m) for models in results for m in models]
        out.sort(key=lambda p: -(p[1].expires_at or float("inf")))
        return out
