"""Every model on every backend: size, family, quantization, digest, where it is loaded.

Each backend is asked at once: what it has (`/api/tags`), what is loaded (`/api/ps`),
and for Ollama backends the details of each model (`/api/show`: family, quantization,
capabilities, context length). A backend that cannot be reached is reported with its
error; the others are still listed. The result is plain data, the same JSON for
`aistack models --json` and the gateway's `GET /admin/api/models`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from msgspec.structs import replace

from aistack.backends.base import Backend, ModelMemory, loaded_models, manages_models
from aistack.core.errors import GatewayError
from aistack.core.models import LoadedModel, ModelCard, canonical
from aistack.fleet.placement import resolve_alias

SHOW_CONCURRENCY = 4  # /api/show calls in flight per backend


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Loaded:
    size: int
    size_vram: int
    expires_at: str | None  # None: stays loaded
    context_length: int | None


@dataclass
class Instance:
    """One model on one backend."""

    backend: str
    name: str  # as the backend calls it
    size: int = 0
    digest: str = ""
    modified_at: str | None = None
    format: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    capabilities: list[str] = field(default_factory=list)
    context_length: int | None = None
    declared: bool = False
    # False: declared in the config but not on the backend; None: nobody can tell
    # (the backend is unreachable, or `discover: false`).
    present: bool | None = True
    loaded: Loaded | None = None


@dataclass
class BackendReport:
    name: str
    kind: str
    url: str
    reachable: bool
    manages_models: bool
    loads_models: bool = False  # can load and unload on request (the console's buttons)
    latency_ms: float | None = None
    error: str = ""
    models: int = 0
    loaded: int = 0
    declared: list[str] = field(default_factory=list)
    discover: bool = True


@dataclass
class FleetModel:
    name: str  # canonical
    instances: list[Instance]
    aliases: list[str] = field(default_factory=list)

    @property
    def backends(self) -> list[str]:
        return [i.backend for i in self.instances if i.present]


@dataclass
class Inventory:
    backends: list[BackendReport]
    models: list[FleetModel]
    generated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "backends": [asdict(b) for b in self.backends],
            "models": [
                {
                    "name": m.name,
                    "aliases": m.aliases,
                    "backends": m.backends,
                    "missing_on": [i.backend for i in m.instances if i.present is False],
                    "instances": [asdict(i) for i in m.instances],
                }
                for m in self.models
            ],
        }


def _instance(card: ModelCard, loaded: LoadedModel | None, declared: bool) -> Instance:
    d = card.details
    return Instance(
        backend=card.backend,
        name=card.name,
        size=card.size,
        digest=card.digest,
        modified_at=iso(card.modified_at),
        format=d.format,
        family=d.family,
        parameter_size=d.parameter_size,
        quantization=d.quantization_level,
        capabilities=list(card.capabilities),
        context_length=card.context_length,
        declared=declared,
        loaded=None
        if loaded is None
        else Loaded(
            size=loaded.size,
            size_vram=loaded.size_vram,
            expires_at=iso(loaded.expires_at),
            context_length=loaded.context_length,
        ),
    )


async def _detailed(b: Backend, cards: list[ModelCard]) -> list[ModelCard]:
    """Ollama's /api/show for each model: family, quantization, capabilities, context."""
    if b.kind != "ollama":
        return cards
    sem = asyncio.Semaphore(SHOW_CONCURRENCY)

    async def one(card: ModelCard) -> ModelCard:
        async with sem:
            try:
                s = await b.show(card)
            except GatewayError:
                return card  # listed but not describable: keep what /api/tags said
        d = s.card.details
        info = s.model_info
        arch = info.get("general.architecture")
        ctx = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
        return replace(
            card,
            details=d if (d.family or d.quantization_level) else card.details,
            capabilities=s.capabilities or card.capabilities,
            context_length=ctx if isinstance(ctx, int) else card.context_length,
        )

    return list(await asyncio.gather(*(one(c) for c in cards)))


async def _one(
    b: Backend, declared: Sequence[str], discover: bool, details: bool
) -> tuple[BackendReport, list[Instance]]:
    desc = b.describe()
    report = BackendReport(
        name=b.name,
        kind=b.kind,
        url=str(desc.get("url", "")),
        reachable=True,
        manages_models=manages_models(b),
        loads_models=isinstance(b, ModelMemory),
        declared=list(declared),
        discover=discover,
    )
    cards: list[ModelCard] = []
    if discover:
        t = time.monotonic()
        try:
            cards = await b.list_models()
            report.latency_ms = round((time.monotonic() - t) * 1000, 1)
        except GatewayError as e:
            report.reachable = False
            report.error = e.message
    loaded: list[LoadedModel] = []
    if report.reachable and discover:
        try:
            loaded = await loaded_models(b)
        except GatewayError:
            loaded = []
        if details:
            cards = await _detailed(b, cards)
    by_name = {canonical(m.name): m for m in loaded}
    want = {canonical(m) for m in declared}
    instances = [
        _instance(c, by_name.get(canonical(c.name)), canonical(c.name) in want) for c in cards
    ]
    have = {canonical(c.name) for c in cards}
    for m in declared:
        if canonical(m) not in have:
            # Declared but absent (or not discoverable): listed so the gap shows.
            instances.append(
                Instance(backend=b.name, name=m, declared=True, present=False if discover else None)
            )
            have.add(canonical(m))
    if not report.reachable:
        for i in instances:
            i.present = None
    report.models = sum(1 for i in instances if i.present)
    report.loaded = sum(1 for i in instances if i.loaded is not None)
    return report, instances


async def collect(
    backends: Sequence[Backend],
    *,
    declared: Mapping[str, Sequence[str]] | None = None,
    discover: Mapping[str, bool] | None = None,
    aliases: Mapping[str, str] | None = None,
    details: bool = True,
) -> Inventory:
    """Ask every backend at once; a dead one is a report with an error, not a failure."""
    declared = declared or {}
    discover = discover or {}
    results = await asyncio.gather(
        *(_one(b, declared.get(b.name, ()), discover.get(b.name, True), details) for b in backends)
    )
    models: dict[str, FleetModel] = {}
    for _, instances in results:
        for inst in instances:
            key = canonical(inst.name)
            models.setdefault(key, FleetModel(key, [])).instances.append(inst)
    for alias in sorted(aliases or {}):
        target = canonical(resolve_alias(alias, aliases or {}))
        if target in models:
            models[target].aliases.append(alias)
    return Inventory(
        backends=[r for r, _ in results],
        models=[models[k] for k in sorted(models)],
        generated_at=iso(time.time()) or "",
    )
