"""The router's attempt loop, in process: which deployments a request calls, in what
order, how often, and what the caller gets when they all fail.

The backends here are scripted stand-ins that fail on cue (a fault a real backend cannot
be made to show in a given order); the gateway, catalog and router are the real ones.
End-to-end behaviour with real processes is in tests/test_routing.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aistack.backends.base import Backend, ChunkStream
from aistack.backends.transport import HttpClient
from aistack.config import parse
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest, Message
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.models import ModelCard, ModelShow
from aistack.service import Gateway, RequestContext

UNREACHABLE = GatewayError(ErrorKind.UPSTREAM_UNREACHABLE, "refused")
TIMEOUT = GatewayError(ErrorKind.UPSTREAM_TIMEOUT, "timed out (first byte)")
OVERLOADED = GatewayError(ErrorKind.UPSTREAM_ERROR, "busy", upstream_status=503)
TOO_LONG = GatewayError(
    ErrorKind.INVALID_REQUEST, "exceeds the context length", code="context_length_exceeded"
)
BAD = GatewayError(ErrorKind.INVALID_REQUEST, "invalid think value")
MISSING = GatewayError(ErrorKind.NOT_FOUND, "model not found")


def rate_limited(after: float) -> GatewayError:
    return GatewayError(
        ErrorKind.UPSTREAM_RATE_LIMITED, "slow down", upstream_status=429, retry_after=after
    )


class Scripted(Backend):
    """Answers each call with the next step of its script: an error to raise, or (None)
    a one-chunk answer. After the script, it answers. `hold` keeps a stream open until
    released, so a test can keep a request in flight."""

    kind = "ollama"

    def __init__(self, name: str, *models: str, script: list[GatewayError | None] | None = None):
        super().__init__(name)
        self.models = models
        self.script = list(script or [])
        self.calls = 0
        self.hold: asyncio.Event | None = None

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(name=m, backend=self.name) for m in self.models]

    async def show(self, card: ModelCard) -> ModelShow:
        return ModelShow(card=card)

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        self.calls += 1
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        hold = self.hold

        async def gen() -> AsyncIterator[Chunk]:
            yield Chunk(content=f"from {self.name}")
            if hold is not None:
                await hold.wait()
            yield Chunk(finish="stop", model=model)

        return ChunkStream(gen())

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        return await self.chat(req.as_chat(), model)

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        return EmbedResult(model=model, embeddings=[[1.0]])


def gateway(yaml: str, *backends: Backend) -> Gateway:
    names = "".join(f"  - {{name: {b.name}, kind: local}}\n" for b in backends)
    cfg = parse(f"backends:\n{names}{yaml}", "test.yaml")
    return Gateway(cfg, list(backends), HttpClient())


REQ = ChatRequest(model="m", messages=(Message(role="user", content="hi"),), stream=True)


async def ask(gw: Gateway, model: str = "m") -> tuple[RequestContext, str]:
    await gw.catalog.refresh()
    ctx = RequestContext("ollama", "chat")
    answer = await gw.chat(ctx, ChatRequest(model=model, messages=REQ.messages))
    try:
        text = "".join([c.content async for c in answer])
    finally:
        await answer.aclose()
    gw.finish(ctx)
    return ctx, text


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


FAST = "routing:\n  backoff: 0.001\n  backoff_max: 0.002\n"


def test_a_failure_moves_to_another_deployment_at_once() -> None:
    a, b = Scripted("a", "m", script=[UNREACHABLE]), Scripted("b", "m")
    gw = gateway("routing: {strategy: priority}\n", a, b)
    ctx, text = run(ask(gw))  # type: ignore[misc]
    assert text == "from b" and ctx.attempts == 2 and ctx.fallbacks == 0
    assert [f.backend for f in ctx.failed or []] == ["a"]
    assert ctx.deployment is not None and ctx.deployment.backend is b


def test_one_deployment_is_asked_again_after_a_pause_up_to_retries() -> None:
    a = Scripted("a", "m", script=[UNREACHABLE, OVERLOADED])
    ctx, text = run(ask(gateway(FAST, a)))  # type: ignore[misc]
    assert text == "from a" and ctx.attempts == 3 and a.calls == 3
    a2 = Scripted("a", "m", script=[UNREACHABLE] * 5)
    with pytest.raises(GatewayError) as e:
        run(ask(gateway(FAST + "", a2)))
    assert a2.calls == 3  # 1 + retries (2)
    assert e.value.kind is ErrorKind.UPSTREAM_UNREACHABLE


def test_a_timeout_is_not_asked_again_on_the_same_deployment() -> None:
    a = Scripted("a", "m", script=[TIMEOUT])
    with pytest.raises(GatewayError) as e:
        run(ask(gateway(FAST, a)))
    assert a.calls == 1 and e.value.status == 504


def test_a_callers_mistake_is_answered_at_once() -> None:
    a, b = Scripted("a", "m", script=[BAD]), Scripted("b", "m")
    with pytest.raises(GatewayError) as e:
        run(ask(gateway("routing: {strategy: priority}\n", a, b)))
    assert e.value is BAD and b.calls == 0


def test_a_missing_model_is_looked_for_elsewhere_without_penalty() -> None:
    a, b = Scripted("a", "m", script=[MISSING]), Scripted("b", "m")
    gw = gateway("routing: {strategy: priority}\n", a, b)
    _, text = run(ask(gw))  # type: ignore[misc]
    assert text == "from b"
    slot = next(s for p in gw.router.pools() for s in p.slots if s.dep.backend is a)
    assert slot.circuit.failures == 0 and slot.errors == 0 and "not found" in slot.last_error


def test_when_a_pool_is_exhausted_the_next_entry_of_the_chain_answers() -> None:
    a = Scripted("a", "m", script=[UNREACHABLE] * 3)
    b = Scripted("b", "n", script=[OVERLOADED] * 3)
    c = Scripted("c", "o")
    gw = gateway(FAST + "  models:\n    m: {fallbacks: [n, o]}\n", a, b, c)
    ctx, text = run(ask(gw))  # type: ignore[misc]
    assert text == "from c" and (a.calls, b.calls, c.calls) == (3, 3, 1)
    assert ctx.attempts == 7 and ctx.fallbacks == 2 and len(ctx.failed or []) == 6
    # Both are cooling down now: the next request goes straight to the last entry.
    ctx2, text2 = run(ask(gw))  # type: ignore[misc]
    assert text2 == "from c" and ctx2.attempts == 1 and (a.calls, b.calls) == (3, 3)


def test_a_too_long_prompt_jumps_to_the_context_chain() -> None:
    short = Scripted("short", "m", script=[TOO_LONG])
    other = Scripted("other", "n")
    long_ = Scripted("long", "big")
    gw = gateway("routing:\n  models:\n    m: {fallbacks: [n], context_fallbacks: [big]}\n",
                 short, other, long_)  # fmt: skip
    ctx, text = run(ask(gw))  # type: ignore[misc]
    assert text == "from long" and other.calls == 0 and ctx.fallbacks == 1
    slot = next(s for p in gw.router.pools() for s in p.slots if s.dep.backend is short)
    assert slot.circuit.failures == 0  # the prompt's fault, not the backend's
    # A context fallback too short as well hands it to the next one.
    gw3 = gateway(
        "routing:\n  models:\n    m: {context_fallbacks: [big, bigger]}\n",
        Scripted("short", "m", script=[TOO_LONG]),
        Scripted("long", "big", script=[TOO_LONG]),
        Scripted("longer", "bigger"),
    )
    ctx3, text3 = run(ask(gw3))  # type: ignore[misc]
    assert text3 == "from longer" and ctx3.fallbacks == 2 and ctx3.attempts == 3
    # Without a context chain the caller gets the 400.
    gw2 = gateway("", Scripted("short", "m", script=[TOO_LONG]))
    with pytest.raises(GatewayError) as e:
        run(ask(gw2))
    assert e.value.code == "context_length_exceeded" and e.value.status == 400


def test_a_429_cools_a_deployment_for_its_retry_after_and_the_caller_hears_why() -> None:
    # A Retry-After longer than the request may wait (queue_timeout) is not waited out.
    a = Scripted("a", "m", script=[rate_limited(30)])
    gw = gateway(FAST + "  queue_timeout: 5\n", a)
    with pytest.raises(GatewayError) as e:
        run(ask(gw))
    assert e.value.status == 429 and a.calls == 1
    # The next request does not call it at all, and says when to come back.
    with pytest.raises(GatewayError) as e2:
        run(ask(gw))
    assert a.calls == 1
    assert e2.value.status == 429 and e2.value.retry_after is not None
    assert 25 < e2.value.retry_after <= 30 and "cooling down" in e2.value.message


async def _capped(queue_timeout: float) -> tuple[list[str], int]:
    a = Scripted("a", "m")
    a.hold = asyncio.Event()
    gw = gateway(
        f"routing:\n  queue_timeout: {queue_timeout}\n"
        "  models: {m: {deployments: {a: {max_in_flight: 1}}}}\n",
        a,
    )
    first = asyncio.create_task(ask(gw))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(ask(gw))
    await asyncio.sleep(0.05)
    in_flight = next(s for p in gw.router.pools() for s in p.slots).in_flight
    a.hold.set()
    out: list[str] = []
    for t in (first, second):
        try:
            out.append((await t)[1])
        except GatewayError as e:
            out.append(f"{e.status}")
    return out, in_flight


async def _context_chain_busy() -> str:
    big = Scripted("long", "big")
    big.hold = asyncio.Event()
    gw = gateway(
        "routing:\n  models:\n    m: {context_fallbacks: [big]}\n"
        "    big: {deployments: {long: {max_in_flight: 1}}}\n",
        Scripted("short", "m", script=[TOO_LONG]),
        big,
    )
    first = asyncio.create_task(ask(gw, "big"))  # takes big's only slot
    await asyncio.sleep(0.02)
    second = asyncio.create_task(ask(gw, "m"))  # too long for m; waits for big
    await asyncio.sleep(0.05)
    assert not second.done()
    big.hold.set()
    await first
    return (await second)[1]


def test_a_busy_context_fallback_is_waited_for() -> None:
    assert run(_context_chain_busy()) == "from long"


def test_at_its_cap_a_request_waits_for_a_free_slot() -> None:
    out, in_flight = run(_capped(5))  # type: ignore[misc]
    assert in_flight == 1 and out == ["from a", "from a"]


def test_waiting_for_a_slot_is_bounded_by_queue_timeout() -> None:
    out, _ = run(_capped(0.02))  # type: ignore[misc]
    assert out == ["from a", "503"]


async def _abandon() -> int:
    a = Scripted("a", "m")
    a.hold = asyncio.Event()
    gw = gateway("", a)
    await gw.catalog.refresh()
    task = asyncio.create_task(ask(gw))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return next(s for p in gw.router.pools() for s in p.slots).in_flight


def test_a_cancelled_request_leaves_nothing_in_flight() -> None:
    assert run(_abandon()) == 0
