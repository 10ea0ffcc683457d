"""What the scheduler adds to a request's path when nothing waits: a microbenchmark.

`make bench-scheduler` (a few seconds, one core, in process: no sockets, no model). It
times the router's whole fast path for one request, `Router.run` with a call that
answers at once, then `finished`, on a pool of three deployments, in one run and
interleaved, three ways:

- `plain`: backends that say nothing about memory (OpenAI-compatible servers), so the
  selection skips every scheduling rule: the router as it was before model-aware
  scheduling, apart from one queue check;
- `loaded`: Ollama-like backends that report what they hold, the model loaded on one
  of them: affinity, the loaded-model map's counts, the empty-queue check;
- `gpu`: the same with a VRAM budget on every card (the memory rules stay off the path
  while the model is loaded).

It prints microseconds per request (the median of rounds) and the extra over `plain`,
against the budget: the empty queue and the affinity check add at most 0.02 ms at c=1
(issue 17). Whole-gateway latency stays `make bench`'s job (its mock now answers
/api/ps, so its Ollama lanes run with the model known loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from aistack.backends.base import Backend, ChunkStream
from aistack.config import parse
from aistack.core.chat import ChatRequest
from aistack.core.models import LoadedModel, ModelCard, ModelShow
from aistack.routing.catalog import Catalog, Deployment
from aistack.routing.router import Router
from aistack.service import RequestContext

BUDGET_US = 20.0
GB = 1_000_000_000


class Plain(Backend):
    kind = "openai"

    async def list_models(self) -> list[ModelCard]:
        return [ModelCard(name="m", backend=self.name, size=6 * GB)]

    async def show(self, card: ModelCard) -> ModelShow:
        return ModelShow(card=card)

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        raise NotImplementedError


class Reporting(Plain):
    kind = "ollama"

    async def ps(self) -> list[LoadedModel]:
        return []


def router(kind: type[Backend], vram: int = 0) -> Router:
    backends = [kind(n) for n in ("a", "b", "c")]
    names = "".join(f"  - {{name: {b.name}, kind: local}}\n" for b in backends)
    cfg = parse(f"backends:\n{names}", "bench.yaml")
    r = Router(Catalog(backends), backends, cfg.routing, cfg.backends)
    if vram:
        r.memory({}, {b.name: vram for b in backends})
    asyncio.run(r.catalog.refresh())
    if kind is Reporting:
        r.observe_loaded("b", [LoadedModel(name="m", backend="b", size=6 * GB)])
    return r


async def timed(r: Router, n: int) -> float:
    route = r.route("m")
    assert route is not None
    ctx = RequestContext("openai", "chat_completions")

    async def call(dep: Deployment) -> int:
        return 1

    run, finished = r.run, r.finished
    t = time.perf_counter_ns()
    for _ in range(n):
        ctx.attempts = 0
        slot, _ = await run(route, call, ctx)
        finished(slot)
    return (time.perf_counter_ns() - t) / n / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("-n", type=int, default=20_000, help="requests per round and arm")
    args = ap.parse_args()
    arms = {
        "plain": router(Plain),
        "loaded": router(Reporting),
        "gpu": router(Reporting, vram=24 * GB),
    }
    results: dict[str, list[float]] = {k: [] for k in arms}

    async def rounds() -> None:
        for r in arms.values():  # warm up
            await timed(r, 2000)
        for i in range(args.rounds):
            order = list(arms.items())
            if i % 2:
                order.reverse()  # the machine drifts: alternate the order
            for name, r in order:
                results[name].append(await timed(r, args.n))

    asyncio.run(rounds())
    base = statistics.median(results["plain"])
    worst = 0.0
    print(f"{'arm':8} {'us/request':>11} {'extra us':>9}")
    for name, vals in results.items():
        med = statistics.median(vals)
        extra = med - base
        worst = max(worst, extra)
        print(f"{name:8} {med:11.2f} {extra:+9.2f}")
    verdict = "PASS" if worst <= BUDGET_US else "FAIL"
    print(f"budget: at most +{BUDGET_US:.0f} us over plain: {verdict} (worst {worst:+.2f} us)")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
