"""The scheduler's rules, in process: what is loaded where, where a cold model may go,
the fair queue, busy answers waited out, switches that never thrash, request defaults.

The pure parts (routing/loaded.py, routing/queue.py, routing/defaults.py) are driven as
tables; the router's use of them with scripted backends that hold their answers on cue
(a real backend cannot be made to pause at an exact point). Whole processes, with a
stand-in Ollama that loads and evicts models, are in tests/test_scheduling.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from aistack.backends.base import Backend, ChunkStream
from aistack.backends.transport import HttpClient
from aistack.config import ModelDefaults, parse
from aistack.core.chat import (
    ChatRequest,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Message,
    Sampling,
)
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.models import LoadedModel, ModelCard, ModelShow, parse_size
from aistack.routing.catalog import Deployment
from aistack.routing.defaults import Defaults
from aistack.routing.loaded import FITS, NOT_NOW, SWITCH, Card
from aistack.routing.queue import FairQueue, Waiter
from aistack.routing.state import BackendHealth, Slot
from aistack.routing.strategy import LEAST_IN_FLIGHT, PRIORITY, WEIGHTED, select
from aistack.service import Gateway, RequestContext

GB = 1_000_000_000

# -- the fair queue


def test_the_queue_takes_keys_in_turn_and_each_key_first_in_first_out() -> None:
    q: FairQueue[str] = FairQueue("m")
    ws = {n: Waiter[str](n[0], 0.0, 0) for n in ("a1", "a2", "a3", "b1", "b2", "c1")}
    for n in ("a1", "a2", "a3", "b1", "b2", "c1"):
        q.push(ws[n])
    assert q.live == 6
    out = []
    while (w := q.pop()) is not None:
        w.leave()
        out.append(next(n for n, x in ws.items() if x is w))
    assert out == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert q.live == 0


def test_a_request_leaving_the_middle_of_the_queue_is_gone_at_once() -> None:
    q: FairQueue[str] = FairQueue("m")
    other: FairQueue[str] = FairQueue("fallback")
    ws = [Waiter[str]("k", 0.0, 0) for _ in range(3)]
    for w in ws:
        q.push(w)
    other.push(ws[1])  # waits for a fallback too
    assert ws[1].leave() and not ws[1].leave()
    assert (q.live, other.live) == (2, 0)
    assert q.pop() is ws[0] and q.pop() is ws[2] and q.pop() is None


# -- memory: sizes, tiers, learning


@pytest.mark.parametrize(
    ("text", "size"),
    [("24GiB", 24 * 1024**3), ("16 GB", 16 * GB), ("8000000000", 8 * GB), (1024, 1024)],
)
def test_sizes_are_read_in_the_units_people_write(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "24 GiBs", "-1", -5, ""])
def test_a_size_that_is_not_one_is_refused(text: str | int) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def card_with(budget: int, **models: tuple[int, bool, int, float]) -> Card:
    """A card holding models: name -> (size GB, loaded, running, last used)."""
    c = Card("gpu", ("box",), vram=budget * GB)
    for name, (size, loaded, running, used) in models.items():
        r = c.resident("box", name, size * GB)
        r.loaded, r.running, r.last_used = loaded, running, used
    return c


NOW = 1000.0
HOLD = 5.0

# (what is there, the cold model's size, its tier)
TIERS = [
    ("nothing loaded", {}, 6, FITS),
    ("room beside a loaded one", {"a": (4, True, 1, NOW)}, 6, FITS),
    ("an idle one, long unused, in the way", {"a": (6, True, 0, NOW - 60)}, 6, SWITCH),
    ("an idle one used just now", {"a": (6, True, 0, NOW - 1)}, 6, NOT_NOW),
    ("a running one in the way", {"a": (6, True, 1, NOW - 60)}, 6, NOT_NOW),
    ("bigger than the card: needs all of it", {"a": (2, True, 0, NOW - 60)}, 20, SWITCH),
    ("one running, one idle that frees enough", {"a": (3, True, 1, NOW), "b": (6, True, 0, 0)},
     6, SWITCH),
]  # fmt: skip


@pytest.mark.parametrize(("what", "models", "size", "tier"), TIERS, ids=[t[0] for t in TIERS])
def test_a_cold_model_goes_where_it_fits_or_where_only_idle_models_are_in_its_way(
    what: str, models: dict[str, tuple[int, bool, int, float]], size: int, tier: int
) -> None:
    c = card_with(10, **models)
    r = c.resident("box", "cold", size * GB)
    assert c.tier(r, NOW, HOLD) == tier


def test_a_request_owed_its_switch_ignores_the_hold_but_never_a_running_model() -> None:
    c = card_with(10, a=(6, True, 0, NOW - 1), b=(3, True, 1, NOW))
    r = c.resident("box", "cold", 6 * GB)
    assert c.tier(r, NOW, HOLD) == NOT_NOW
    assert c.tier(r, NOW, 0.0) == SWITCH
    assert [v.model for v in c.victims(r, NOW, 0.0)] == ["a:latest"]
    c2 = card_with(10, a=(6, True, 2, NOW))
    r2 = c2.resident("box", "cold", 6 * GB)
    assert c2.tier(r2, NOW, 0.0) == NOT_NOW
    assert [v.model for v in c2.victims(r2, NOW, 0.0, running=True)] == ["a:latest"]


def test_without_a_known_budget_nothing_is_predicted() -> None:
    c = Card("gpu", ("box",))
    a = c.resident("box", "a", 6 * GB)
    a.loaded, a.running = True, 3
    assert c.tier(c.resident("box", "b", 60 * GB), NOW, HOLD) == FITS


def loaded(name: str, size: int, expires: float | None = None) -> LoadedModel:
    return LoadedModel(name=name, backend="box", size=size * GB, expires_at=expires)


def test_the_budget_is_learned_from_ps_once_an_eviction_is_seen() -> None:
    c = Card("gpu", ("box",))
    far = 2e9  # unix seconds: a keep-alive far from running out
    assert c.observe("box", [loaded("a", 6, far)], NOW, 1e9) == 1
    assert c.budget == 0  # one model seen: nothing to learn from yet
    c.observe("box", [loaded("a", 6, far), loaded("b", 3, far)], NOW, 1e9)
    assert c.learned == 9 * GB and c.budget == 0
    # c needs room: a went although its keep-alive had not run out.
    c.observe("box", [loaded("b", 3, far), loaded("c", 5, far)], NOW, 1e9)
    assert c.evictions == 1 and c.budget == 9 * GB
    assert not c.residents[("box", "a:latest")].loaded
    # A model whose keep-alive ran out is not an eviction; a declared vram wins.
    c.observe("box", [loaded("c", 5, far)], NOW, 3e9)
    assert c.evictions == 1
    assert Card("gpu", ("box",), vram=24 * GB).budget == 24 * GB


# -- defaults


def chat(**kw: object) -> ChatRequest:
    msgs = kw.pop("messages", (Message(role="user", content="hi"),))
    return ChatRequest(model="m", messages=msgs, **kw)  # type: ignore[arg-type]


D = ModelDefaults(num_ctx=8192, temperature=0.2, keep_alive="30m", think=False, system="Be brief.")

DEFAULTS = [
    ("fills what the client left out", False, chat(),
     dict(num_ctx=8192, temperature=0.2, keep_alive="30m", think=False,
          system=["Be brief.", "hi"])),
    ("keeps what the client set", False,
     chat(sampling=Sampling(num_ctx=2048), keep_alive=-1, think=True,
          messages=(Message(role="system", content="Mine."), Message(role="user", content="hi"))),
     dict(num_ctx=2048, temperature=0.2, keep_alive=-1, think=True, system=["Mine.", "hi"])),
    ("force overrides the client", True,
     chat(sampling=Sampling(num_ctx=2048, temperature=1.0), keep_alive=-1, think=True,
          messages=(Message(role="system", content="Mine."), Message(role="user", content="hi"))),
     dict(num_ctx=8192, temperature=0.2, keep_alive="30m", think=False,
          system=["Be brief.\n\nMine.", "hi"])),
]  # fmt: skip


@pytest.mark.parametrize(("what", "force", "req", "want"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_model_defaults_fill_in_what_the_client_did_not_send(
    what: str, force: bool, req: ChatRequest, want: dict[str, object]
) -> None:
    d = Defaults.of(D, force)
    assert d is not None
    out = d.chat(req)
    got = {
        "num_ctx": out.sampling.num_ctx,
        "temperature": out.sampling.temperature,
        "keep_alive": out.keep_alive,
        "think": out.think,
        "system": [m.content for m in out.messages],
    }
    assert got == want


def test_defaults_apply_to_prompts_and_embeddings_too_and_leave_a_load_alone() -> None:
    d = Defaults.of(ModelDefaults(num_ctx=4096, system="Sys.", options={"num_batch": 8}), False)
    assert d is not None
    g = d.generate(GenerateRequest(model="m", prompt="p", options={"num_batch": 2}))
    assert (g.system, g.sampling.num_ctx, g.options) == ("Sys.", 4096, {"num_batch": 2})
    e = d.embed(EmbedRequest(model="m", inputs=("x",)))
    assert e.options == {"num_batch": 8, "num_ctx": 4096}
    empty = ChatRequest(model="m", messages=())  # Ollama's "load the model" request
    assert d.chat(empty).messages == ()
    assert Defaults.of(None, False) is None


# -- the router with scripted backends


class Box(Backend):
    """An Ollama-like backend: says what it holds, and holds answers until released."""

    kind = "ollama"

    def __init__(self, name: str, *models: str) -> None:
        super().__init__(name)
        self.models = models
        self.calls: list[tuple[str, str]] = []  # (model, first user message)
        self.unloads: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}  # model -> answers wait for it
        self.script: list[GatewayError] = []
        self.held = 0
        self.holds: set[str] = set()

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(name=m, backend=self.name, size=6 * GB) for m in self.models]

    async def show(self, card: ModelCard) -> ModelShow:
        return ModelShow(card=card)

    async def ps(self) -> list[LoadedModel]:
        return [LoadedModel(name=m, backend=self.name, size=6 * GB) for m in sorted(self.holds)]

    async def load(self, model: str, keep_alive: float | str | None = None) -> None:
        self.holds.add(model)

    async def unload(self, model: str) -> None:
        self.unloads.append(model)
        self.holds.discard(model)

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        if self.script:
            raise self.script.pop(0)
        self.calls.append((model, req.messages[-1].content if req.messages else ""))
        self.holds.add(model + ":latest" if ":" not in model else model)
        gate = self.gates.get(model)

        async def gen() -> AsyncIterator[Chunk]:
            yield Chunk(content=f"{self.name}:{model}")
            if gate is not None:
                self.held += 1
                try:
                    await gate.wait()
                finally:
                    self.held -= 1
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


async def ask(gw: Gateway, model: str, text: str = "hi", key: str = "") -> str:
    ctx = RequestContext("ollama", "chat")
    ctx.key_id = key
    answer = await gw.chat(
        ctx, ChatRequest(model=model, messages=(Message(role="user", content=text),))
    )
    try:
        return "".join([c.content async for c in answer])
    finally:
        await answer.aclose()
        gw.finish(ctx)


async def until(cond: object, what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.002)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _affinity() -> list[str]:
    boxes = [Box(n, "m") for n in ("a", "b", "c")]
    gw = gateway("", *boxes)
    await gw.catalog.refresh()
    gw.router.observe_loaded("b", [LoadedModel(name="m", backend="b", size=6 * GB)])
    return [await ask(gw, "m") for _ in range(50)]


def test_requests_go_to_the_instance_where_the_model_is_loaded() -> None:
    out = run(_affinity())
    assert out == ["b:m"] * 50


async def _fair() -> tuple[list[str], int]:
    box = Box("a", "m")
    box.gates["m"] = asyncio.Event()
    gw = gateway("routing:\n  models: {m: {deployments: {a: {max_in_flight: 1}}}}\n", box)
    await gw.catalog.refresh()
    first = asyncio.create_task(ask(gw, "m", "first", key="k1"))
    await until(lambda: box.held == 1, "the first to be answering")
    tasks = []
    q = gw.router.route("m").chain[0].queue  # type: ignore[union-attr]
    for key in ("k1", "k2"):
        for i in range(3):
            tasks.append(asyncio.create_task(ask(gw, "m", f"{key}-{i}", key=key)))
            n = len(tasks)
            await until(lambda: q.live == n, "queued")  # noqa: B023  # awaited at once
    gone = asyncio.create_task(ask(gw, "m", "gone", key="k3"))
    await until(lambda: q.live == 7, "queued")
    gone.cancel()  # its client went away
    await until(lambda: q.live == 6, "the cancelled one to leave the line")
    depth_after_cancel = q.live
    box.gates["m"].set()
    await asyncio.gather(first, *tasks)
    with pytest.raises(asyncio.CancelledError):
        await gone
    return [text for _, text in box.calls[1:]], depth_after_cancel


def test_waiting_requests_are_served_first_in_first_out_per_key_with_keys_in_turn() -> None:
    order, depth = run(_fair())  # type: ignore[misc]
    assert depth == 6  # the one whose client left is out of the line at once
    assert order == ["k1-0", "k2-0", "k1-1", "k2-1", "k1-2", "k2-2"]


async def _busy(error: GatewayError) -> tuple[str, int]:
    box = Box("a", "m")
    box.script = [error, error, error, error]
    gw = gateway(
        "routing:\n  backoff: 0.001\n  backoff_max: 0.002\n  queue_timeout: 20\n"
        "  cooldown: {failures: 2, seconds: 0.05}\n",
        box,
    )
    await gw.catalog.refresh()
    text = await ask(gw, "m")
    return text, len(box.script)


@pytest.mark.parametrize(
    "error",
    [
        GatewayError(ErrorKind.UPSTREAM_ERROR, "server busy", upstream_status=503),
        GatewayError(
            ErrorKind.UPSTREAM_RATE_LIMITED, "slow down", upstream_status=429, retry_after=0.05
        ),
    ],
    ids=["503", "429"],
)
def test_a_backend_that_answers_busy_is_waited_out(error: GatewayError) -> None:
    text, left = run(_busy(error))  # type: ignore[misc]
    assert text == "a:m" and left == 0


async def _not_busy() -> int:
    box = Box("a", "m")
    box.script = [GatewayError(ErrorKind.UPSTREAM_FAILED, "broken", upstream_status=500)] * 3
    gw = gateway("routing:\n  backoff: 0.001\n  backoff_max: 0.002\n", box)
    await gw.catalog.refresh()
    with pytest.raises(GatewayError) as e:
        await ask(gw, "m")
    return e.value.status


def test_a_backend_that_fails_is_not_waited_for() -> None:
    assert run(_not_busy()) == 502


async def _switch() -> dict[str, object]:
    box = Box("a", "big-a", "big-b")
    box.gates["big-a"] = gate = asyncio.Event()
    gw = gateway("routing:\n  switch_after: 0.2\n", box)
    gw.router.memory({}, {"a": 10 * GB})
    await gw.catalog.refresh()
    card = gw.router.card_of("a")
    assert card is not None and card.budget == 10 * GB
    a1 = asyncio.create_task(ask(gw, "big-a", "a1"))
    await until(lambda: box.held == 1, "big-a to be answering")
    b1 = asyncio.create_task(ask(gw, "big-b", "b1"))
    q = gw.router.route("big-b").chain[0].queue  # type: ignore[union-attr]
    await until(lambda: q.live == 1, "big-b to wait")
    a2 = asyncio.create_task(ask(gw, "big-a", "a2"))  # big-a is loaded: it goes at once
    await until(lambda: box.held == 2, "a2 to be answering")
    calls_while_a_runs = [t for _, t in box.calls]
    # b1 has waited switch_after: big-a takes no new request; a3 waits behind b1.
    await until(lambda: card.pending is not None, "the switch to be owed")
    a3 = asyncio.create_task(ask(gw, "big-a", "a3"))
    qa = gw.router.route("big-a").chain[0].queue  # type: ignore[union-attr]
    await until(lambda: qa.live == 1, "a3 to wait")
    gate.set()
    await asyncio.gather(a1, a2, b1, a3)
    return {
        "while_a_runs": calls_while_a_runs,
        "order": [t for _, t in box.calls],
        "unloads": box.unloads,
        "switches": card.switches,
    }


def test_a_switch_waits_for_the_running_model_then_gets_its_turn_within_the_bound() -> None:
    out = run(_switch())
    assert out["while_a_runs"] == ["a1", "a2"]  # b1 is never sent while big-a runs
    assert out["order"] == ["a1", "a2", "b1", "a3"]
    assert out["unloads"] == ["big-a:latest", "big-b:latest"]
    assert out["switches"] == 2


# -- affinity in the strategies (pure)


def _slot(name: str, card: Card | None, loaded: bool, **kw: object) -> Slot:
    dep = Deployment(_Named(name), "m", ModelCard(name="m", backend=name))  # type: ignore[arg-type]
    s = Slot(dep, BackendHealth(name, "ollama"), **kw)  # type: ignore[arg-type]
    if card is not None:
        s.res = card.resident(name, "m", 6 * GB)
        s.res.loaded = loaded
    return s


@dataclass
class _Named:
    name: str
    kind: str = "ollama"


def _fleet(**kw: tuple[bool, dict[str, object]]) -> list[Slot]:
    """Slots by name: (loaded, slot settings); names starting with `cloud` report nothing."""
    out = []
    for name, (loaded, extra) in kw.items():
        card = None if name.startswith("cloud") else Card(name, (name,))
        out.append(_slot(name, card, loaded, **extra))
    return out


AFFINITY = [
    ("loaded beats idle, even busier", LEAST_IN_FLIGHT,
     _fleet(a=(False, {}), b=(True, {"in_flight": 3}), c=(False, {})), "b"),
    ("loaded beats a better priority", PRIORITY,
     _fleet(a=(False, {"priority": 0}), b=(True, {"priority": 5})), "b"),
    ("the strategy decides between the fleet and the cloud", PRIORITY,
     _fleet(cloud=(False, {"priority": 0}), box=(True, {"priority": 1})), "cloud"),
    ("and the other way round", PRIORITY,
     _fleet(cloud=(False, {"priority": 1}), box=(False, {"priority": 0})), "box"),
    ("weighted shares stay among the loaded ones", WEIGHTED,
     _fleet(a=(False, {"weight": 100.0}), b=(True, {"weight": 1.0})), "b"),
    ("nothing loaded: the strategy alone", LEAST_IN_FLIGHT,
     _fleet(a=(False, {"in_flight": 1}), b=(False, {})), "b"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "strategy", "slots", "want"), AFFINITY, ids=[a[0] for a in AFFINITY]
)
def test_the_strategies_prefer_where_the_model_is_loaded(
    what: str, strategy: int, slots: list[Slot], want: str
) -> None:
    s = select(slots, strategy, NOW)
    assert s is not None and s.dep.backend.name == want
