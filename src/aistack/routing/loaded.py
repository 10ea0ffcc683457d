"""What is loaded where, and when a cold model may go to an instance: VRAM, no thrash.

Pure state and rules, no I/O (the health monitor feeds it `/api/ps` answers; the router
feeds it its own traffic). Three kinds of value:

- a `Resident` is one model on one backend (its upstream name): whether it is loaded,
  the memory it takes, the requests running on it through this gateway (under any name
  or alias), when it was last used. Every deployment (`Slot`) of that backend and model
  shares it, so `running` is the one count GPU sharing and eviction look at.
- a `Card` is one GPU's memory: the backends that share it (`gpu:` names a group; by
  default each backend is its own card), their residents, and the budget: the `vram`
  the config declares, or, once an eviction has been seen, the most memory seen in use
  at once (learned from `/api/ps`). Without a budget nothing is predicted: a cold model
  may go anywhere, and the instance does what it does.
- the rules (`Card.tier`, `Card.victims`): a cold model goes where it fits without
  evicting anything; failing that, where the models it would push out are idle (no
  request running, so a model is never evicted under a running request) and have not
  been used for `hold` seconds (so two apps alternating two models that do not fit
  together take turns in runs, not one load per request). A request that has waited
  `hold` seconds is owed its switch: `hold` becomes 0 for it, and the models in its way
  take no new requests on that card until their running ones end (`draining`).

Times are monotonic seconds passed in, so the rules are tested as tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aistack.core.models import LoadedModel, canonical

# Where a request for a model could go on one card, best first (strategy.py compares them).
LOADED = 0  # the model is loaded (or loading) there
FITS = 1  # cold, and it fits in the free memory, or nothing is known about the memory
SWITCH = 2  # cold; it fits once idle models there are unloaded
NOT_NOW = 3  # cold, and the models in its way are running or in use: wait


@dataclass(slots=True, eq=False)
class Resident:
    """One model on one backend, as far as memory and eviction are concerned."""

    backend: str = ""
    model: str = ""  # canonical upstream name
    card: Card | None = None  # None: the backend says nothing about what it holds
    loaded: bool = False  # loaded, or being loaded by a request sent there
    size: int = 0  # bytes it takes loaded (/api/ps `size`; before that its file size)
    running: int = 0  # requests on it now, through this gateway
    last_used: float = 0.0  # monotonic: a request started or ended
    expires_at: float | None = None  # unix seconds, from /api/ps
    draining: bool = False  # a switch waits for it to go: no new requests here
    loads: int = 0  # times it was seen to be loaded (cold starts)


@dataclass(slots=True, eq=False)
class Card:
    """One GPU's memory and the models of every backend on it."""

    name: str
    backends: tuple[str, ...]
    vram: int = 0  # declared; 0: not declared
    learned: int = 0  # the most memory seen in use at once
    evictions: int = 0  # loads seen to push another model out
    budget: int = 0  # vram, else learned once an eviction was seen; 0: unknown
    residents: dict[tuple[str, str], Resident] = field(default_factory=dict)
    # The last /api/ps answer per backend: (model -> size, expires_at), and the list.
    seen: dict[str, dict[str, tuple[int, float | None]]] = field(default_factory=dict)
    listed: dict[str, list[LoadedModel]] = field(default_factory=dict)
    switches: int = 0  # loads sent here that had to unload another model first
    pending: object = None  # the request owed a switch here (its models are draining)

    def __post_init__(self) -> None:
        self.budget = self.vram

    def resident(self, backend: str, model: str, size: int = 0) -> Resident:
        key = (backend, canonical(model))
        r = self.residents.get(key)
        if r is None:
            r = self.residents[key] = Resident(backend, key[1], self, size=size)
        elif not r.size and size:
            r.size = size
        return r

    def used(self) -> int:
        return sum(r.size for r in self.residents.values() if r.loaded)

    def unloaded(self, r: Resident) -> None:
        """This gateway unloaded `r` (or saw it go): not an eviction to learn from."""
        r.loaded = False
        r.draining = False
        r.expires_at = None
        seen = self.seen.get(r.backend)
        if seen is not None:
            seen.pop(r.model, None)
        listed = self.listed.get(r.backend)
        if listed:
            self.listed[r.backend] = [m for m in listed if canonical(m.name) != r.model]

    # -- what the instances say (/api/ps)

    def observe(self, backend: str, models: list[LoadedModel], now: float, wall: float) -> int:
        """One backend's /api/ps answer. Returns how many models it newly shows loaded.

        A model that was listed last time and is gone although its keep-alive had not
        run out was pushed out by a load: from the first such eviction on, the most
        memory seen in use at once is this card's budget (unless `vram` is declared).
        """
        before = self.seen.get(backend, {})
        now_seen: dict[str, tuple[int, float | None]] = {}
        for m in models:
            now_seen[canonical(m.name)] = (m.size or m.size_vram, m.expires_at)
        self.seen[backend] = now_seen
        self.listed[backend] = list(models)
        appeared = 0
        for name, (size, expires) in now_seen.items():
            r = self.resident(backend, name)
            if size:
                r.size = size
            r.expires_at = expires
            if not r.loaded:
                r.loaded = True
                r.loads += 1
                appeared += 1
        for name, (_, expires) in before.items():
            if name in now_seen:
                continue
            gone = self.residents.get((backend, name))
            if gone is not None and gone.loaded and gone.running == 0:
                gone.loaded = False
            if expires is None or expires > wall + 1.0:
                self.evictions += 1  # gone before its time: evicted
        for (b, name), other in self.residents.items():
            # Loaded as far as our traffic knew, but not listed: unloaded meanwhile.
            if b == backend and other.loaded and name not in now_seen and other.running == 0:
                other.loaded = False
        total = sum(s for seen in self.seen.values() for s, _ in seen.values())
        self.learned = max(self.learned, total)
        if not self.vram and self.evictions:
            self.budget = self.learned
        return appeared

    # -- the rules

    def tier(self, r: Resident, now: float, hold: float) -> int:
        """Where a cold model stands on this card now: FITS, SWITCH or NOT_NOW."""
        budget = self.budget
        if not budget:
            return FITS
        # Unknown size, or more than the card was ever seen to hold: the whole card.
        need = min(r.size or budget, budget)
        free = budget - self.used()
        if need <= free:
            return FITS
        ready = 0
        for v in self.residents.values():
            if v.loaded and v is not r and v.running == 0 and now - v.last_used >= hold:
                ready += v.size
        if free + ready >= need:
            return SWITCH
        return NOT_NOW

    def victims(
        self, r: Resident, now: float, hold: float, *, running: bool = False
    ) -> list[Resident]:
        """The models to unload so `r` fits, least recently used first; `running`: count
        models with requests running too (what a switch owed now has to wait for)."""
        budget = self.budget
        if not budget:
            return []
        need = min(r.size or budget, budget) - (budget - self.used())
        if need <= 0:
            return []
        out: list[Resident] = []
        order = sorted(
            (v for v in self.residents.values() if v.loaded and v is not r),
            key=lambda v: (v.running > 0, v.last_used),
        )
        for v in order:
            if need <= 0:
                break
            if v.running and not running:
                continue
            if not running and now - v.last_used < hold:
                continue
            out.append(v)
            need -= v.size
        return out if need <= 0 else []

    def next_change(self, now: float, hold: float) -> float | None:
        """When a model here stops being in use (`hold` after its last request), if any
        idle one is still held: the time a waiting switch may find its way clear."""
        best: float | None = None
        for v in self.residents.values():
            if v.loaded and v.running == 0 and now - v.last_used < hold:
                t = v.last_used + hold
                if best is None or t < best:
                    best = t
        return best
