"""What `/metrics` shows: requests, latency, tokens, spend, routing, the ledger, and Ollama.

Counters and histograms are fed by one observer at the end of each request (a few dict
updates). Gauges that describe live state (in flight per deployment, deployment and
backend state, ledger queue, loaded models and VRAM) are read at scrape time, so the
request path never touches them.

Label values stay bounded: models are the names the catalog resolved (a request for a
model nobody serves counts under model=""), apps are key names (never keys), backends
and deployments come from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from aistack.config import WorkerRole
from aistack.core.models import canonical
from aistack.core.operations import Operation
from aistack.observability.metrics import Registry, merge
from aistack.routing.health import report
from aistack.service import Gateway, RequestContext

if TYPE_CHECKING:
    from aistack.observability.tracing import Tracer

log = logging.getLogger("aistack.metrics")

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
STATES = ("ok", "busy", "half-open", "cooldown", "down")


class GatewayMetrics:
    def __init__(
        self, gw: Gateway, tracer: Tracer | None = None, role: WorkerRole | None = None
    ) -> None:
        self.gw = gw
        self.tracer = tracer
        # One of several workers: a scrape, whichever worker it reaches, asks the others
        # for their values over a Unix socket each (`_serve_peers`) and answers the sum.
        self.role = role
        self._peers: asyncio.AbstractServer | None = None
        r = self.registry = Registry()
        self.requests = r.counter(
            "aistack_requests_total",
            "Requests answered, by dialect, route, model, backend, app and HTTP status.",
            ("dialect", "route", "model", "backend", "app", "status"),
        )
        self.duration = r.histogram(
            "aistack_request_duration_seconds",
            "Time from the first byte of a request to its last, for model requests.",
            ("dialect", "route", "model"),
            LATENCY_BUCKETS,
        )
        self.ttft = r.histogram(
            "aistack_time_to_first_token_seconds",
            "Time from a request's arrival to the backend's first chunk.",
            ("model", "backend"),
            LATENCY_BUCKETS,
        )
        self.tokens = r.counter(
            "aistack_tokens_total",
            "Tokens in (prompt) and out (completion), as the backend counted them.",
            ("direction", "model", "backend", "app"),
        )
        self.rate = r.histogram(
            "aistack_output_tokens_per_second",
            "Generation speed of each answer (output tokens after the first chunk).",
            ("model", "backend"),
            RATE_BUCKETS,
        )
        self.spend = r.counter(
            "aistack_spend_usd_total",
            "Cost of answered requests whose cost is known, in USD.",
            ("model", "app"),
        )
        self.retries = r.counter(
            "aistack_retries_total", "Extra upstream attempts before an answer.", ("model",)
        )
        self.fallbacks = r.counter(
            "aistack_fallbacks_total", "Requests answered by a fallback entry.", ("model",)
        )
        self.upstream_errors = r.counter(
            "aistack_upstream_errors_total",
            "Failed upstream attempts (before or during an answer), by backend and kind.",
            ("backend", "error"),
        )
        self.in_flight = r.gauge(
            "aistack_in_flight", "Requests in flight per deployment.", ("deployment",)
        )
        self.dep_state = r.gauge(
            "aistack_deployment_state",
            "1 for the state each deployment is in (ok, busy, half-open, cooldown, down).",
            ("deployment", "state"),
        )
        self.backend_up = r.gauge(
            "aistack_backend_up", "1 when the backend's last probe answered.", ("backend", "kind")
        )
        self.backend_latency = r.gauge(
            "aistack_backend_probe_latency_seconds", "The last probe's latency.", ("backend",)
        )
        self.ledger_queue = r.gauge("aistack_ledger_queue_depth", "Ledger rows waiting.")
        self.ledger_written = r.gauge("aistack_ledger_rows_written", "Ledger rows written.")
        self.ledger_dropped = r.gauge(
            "aistack_ledger_rows_dropped", "Ledger rows dropped because the queue was full."
        )
        self.budget = r.gauge(
            "aistack_key_budget_usd", "Each key's budget for its period, in USD.", ("app",)
        )
        self.budget_spent = r.gauge(
            "aistack_key_budget_spent_usd",
            "What each key with a budget has spent in its current period, in USD.",
            ("app",),
        )
        self.traces = r.gauge(
            "aistack_trace_spans", "Spans exported, dropped and queued.", ("outcome",)
        )
        self.loaded = r.gauge(
            "aistack_ollama_models_loaded", "Models loaded (/api/ps), per backend.", ("backend",)
        )
        self.vram = r.gauge(
            "aistack_ollama_model_vram_bytes", "VRAM a loaded model uses.", ("backend", "model")
        )
        self.model_size = r.gauge(
            "aistack_ollama_model_size_bytes", "Memory a loaded model uses.", ("backend", "model")
        )
        self.expires = r.gauge(
            "aistack_ollama_model_expires_in_seconds",
            "Seconds until a loaded model is unloaded (keep_alive).",
            ("backend", "model"),
        )
        self.queue_depth = r.gauge(
            "aistack_queue_depth",
            "Requests waiting for a deployment of each model (all busy, or its GPU taken).",
            ("model",),
        )
        self.queue_longest = r.gauge(
            "aistack_queue_longest_wait_seconds",
            "How long the longest-waiting request for each model has waited so far.",
            ("model",),
        )
        self.queue_wait = r.histogram(
            "aistack_queue_wait_seconds",
            "Time requests spent waiting in line for a deployment (only those that waited).",
            ("model",),
            LATENCY_BUCKETS,
        )
        self.switches = r.counter(
            "aistack_model_switches_total",
            "Times a model was loaded onto a backend (a cold start there), as aistack saw it.",
            ("backend", "model"),
        )
        self.vram_budget = r.gauge(
            "aistack_gpu_vram_budget_bytes",
            "Each GPU's memory budget (vram, or learned from /api/ps); 0: unknown.",
            ("gpu",),
        )
        self.vram_used = r.gauge(
            "aistack_gpu_vram_used_bytes", "Memory of the models loaded on each GPU.", ("gpu",)
        )
        self.info = r.gauge("aistack_info", "The running version.", ("version",))
        self.info.set((gw.version,), 1)
        self.rss = r.gauge("aistack_process_resident_memory_bytes", "Resident memory.")
        self.cpu = r.gauge("aistack_process_cpu_seconds", "CPU time used (user + system).")
        self.fds = r.gauge("aistack_process_open_fds", "Open file descriptors.")
        r.collect_with(self._collect)
        self._names: dict[str, str] = {}
        self._ps_task: asyncio.Task[None] | None = None

    # -- per request (hot path: dictionary updates only)

    def _model(self, ctx: RequestContext) -> str:
        if ctx.deployment is None:
            return ""
        name = self._names.get(ctx.model)
        if name is None:
            name = canonical(ctx.model)
            if len(self._names) < 10_000:
                self._names[ctx.model] = name
        return name

    def observe(self, ctx: RequestContext) -> None:
        model = self._model(ctx)
        backend = ctx.backend
        self.requests.inc((ctx.dialect, ctx.route, model, backend, ctx.app, str(ctx.status)))
        if ctx.operation is Operation.NONE:
            return
        self.duration.observe((ctx.dialect, ctx.route, model), (ctx.end_ns - ctx.started_ns) / 1e9)
        if ctx.failed:
            for a in ctx.failed:
                self.upstream_errors.inc((a.backend, a.error))
        if ctx.attempts > 1:
            self.retries.inc((model,), ctx.attempts - 1)
        if ctx.fallbacks:
            self.fallbacks.inc((model,))
        if ctx.queued_ns:
            self.queue_wait.observe((model,), ctx.queued_ns / 1e9)
        if ctx.error and ctx.error != "CLIENT_CLOSED" and ctx.first_ns and backend:
            self.upstream_errors.inc((backend, ctx.error))
        if not backend:
            return
        if ctx.first_ns:
            self.ttft.observe((model, backend), (ctx.first_ns - ctx.started_ns) / 1e9)
        u = ctx.usage
        if u is None:
            return
        self.tokens.inc(("input", model, backend, ctx.app), u.prompt_tokens)
        self.tokens.inc(("output", model, backend, ctx.app), u.completion_tokens)
        gen = (ctx.end_ns - ctx.first_ns) / 1e9 if ctx.first_ns else 0
        if u.completion_tokens > 1 and gen > 0 and ctx.stream:
            self.rate.observe((model, backend), (u.completion_tokens - 1) / gen)
        if u.cost:
            self.spend.inc((model, ctx.app), u.cost)

    # -- at scrape time

    def _collect(self) -> None:
        rep = report(self.gw.router)
        self.in_flight.clear()
        self.dep_state.clear()
        for d in rep["deployments"]:
            key = f"{d['backend']}/{d['upstream_model']}"
            self.in_flight.set((key,), d["in_flight"])
            for s in STATES:
                self.dep_state.set((key, s), 1 if d["state"] == s else 0)
        self._memory(rep)
        self.backend_up.clear()
        for b in rep["backends"]:
            self.backend_up.set((b["name"], b["kind"]), 1 if b["state"] == "up" else 0)
            if b["latency_ms"] is not None:
                self.backend_latency.set((b["name"],), b["latency_ms"] / 1000)
        gate = self.gw.gate
        if gate is not None:
            st = gate.ledger.status()
            self.ledger_queue.set((), float(st["queued"]))  # type: ignore[arg-type]
            self.ledger_written.set((), float(st["written"]))  # type: ignore[arg-type]
            self.ledger_dropped.set((), float(st["dropped"]))  # type: ignore[arg-type]
            self.budget.clear()
            self.budget_spent.clear()
            for rec in gate.records:
                if rec.budget is not None and rec.revoked_at is None:
                    self.budget.set((rec.name,), rec.budget)
                    self.budget_spent.set((rec.name,), gate.spent(rec.id))
        if self.tracer is not None:
            self.traces.set(("exported",), self.tracer.exported)
            self.traces.set(("dropped",), self.tracer.dropped)
            self.traces.set(("queued",), len(self.tracer.queue) + len(self.tracer.pending))
        self._process()

    def _memory(self, rep: dict[str, Any]) -> None:
        """Queues, switches and what is loaded where: the router's map, read as it is."""
        self.queue_depth.clear()
        self.queue_longest.clear()
        for q in rep["queues"]:
            self.queue_depth.set((q["model"],), q["waiting"])
            self.queue_longest.set((q["model"],), q["longest_wait_s"])
        router = self.gw.router
        loaded: dict[str, int] = {name: 0 for name in self.gw.backends}
        now = time.time()
        for gauge in (self.vram, self.model_size, self.expires, self.vram_budget, self.vram_used):
            gauge.clear()
        for card in router.cards.values():
            self.vram_budget.set((card.name,), card.budget)
            self.vram_used.set((card.name,), card.used())
            for (backend, model), r in card.residents.items():
                if r.loads:
                    self.switches.values[(backend, model)] = r.loads
            for backend, models in card.listed.items():
                loaded[backend] = len(models)
                for m in models:
                    key = (backend, m.name)
                    self.vram.set(key, m.size_vram)
                    self.model_size.set(key, m.size)
                    if m.expires_at is not None:
                        self.expires.set(key, max(0.0, m.expires_at - now))
        self.loaded.clear()
        for name, n in loaded.items():
            self.loaded.set((name,), n)

    def _process(self) -> None:
        try:
            with open("/proc/self/statm") as f:
                self.rss.set((), int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
            t = os.times()
            self.cpu.set((), t.user + t.system)
            self.fds.set((), len(os.listdir("/proc/self/fd")))
        except OSError:
            pass

    def expose(self) -> str:
        return self.registry.expose()

    async def scrape(self) -> str:
        """The exposition a scrape gets: this process's, or with several workers every
        worker's merged (counters and histograms summed, gauges per `worker`). A worker
        that does not answer within a second (restarting) is left out and counted in
        `aistack_workers_scraped`."""
        role = self.role
        if role is None:
            return self.expose()
        got = [(role.index, self.registry.snapshot())]
        others = [i for i in range(role.count) if i != role.index]
        answers = await asyncio.gather(*(self._ask(i) for i in others))
        got += [(i, a) for i, a in zip(others, answers, strict=True) if a is not None]
        got.sort(key=lambda x: x[0])
        n = len(got)
        tail = (
            "# HELP aistack_workers_scraped Workers whose values this scrape holds, of all.\n"
            "# TYPE aistack_workers_scraped gauge\n"
            f'aistack_workers_scraped{{of="{role.count}"}} {n}\n'
        )
        return merge(got) + tail

    def _socket(self, index: int) -> str:
        assert self.role is not None
        return os.path.join(self.role.folder, f"metrics-{index}.sock")

    async def _ask(self, index: int) -> Any:
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_unix_connection(self._socket(index))
                try:
                    return orjson.loads(await reader.read())
                finally:
                    writer.close()
        except (OSError, TimeoutError, orjson.JSONDecodeError):
            return None

    async def _answer_peer(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            w.write(orjson.dumps(self.registry.snapshot()))
            await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    # -- Ollama's loaded models, polled (Ollama has no /metrics of its own)

    async def start(self, interval: float = 30.0) -> None:
        if self.role is not None:
            path = self._socket(self.role.index)
            with contextlib.suppress(FileNotFoundError):  # left by this worker's last life
                os.unlink(path)
            self._peers = await asyncio.start_unix_server(self._answer_peer, path)
        if interval > 0:
            self._ps_task = asyncio.create_task(self._poll_ps(interval), name="ps-poll")

    async def _poll_ps(self, interval: float) -> None:
        while True:
            await self.poll_ps()
            await asyncio.sleep(interval)

    async def poll_ps(self) -> None:
        """Ask every backend what it holds; the router's map keeps the answers (the
        health probes ask too), and the gauges are read from it at scrape time."""
        health = self.gw.health
        await asyncio.gather(
            *(health.refresh_loaded(b) for b in self.gw.backends.values()),
            return_exceptions=True,
        )

    async def close(self) -> None:
        if self._peers is not None:
            self._peers.close()
            self._peers = None
        if self._ps_task is not None:
            self._ps_task.cancel()
            self._ps_task = None
