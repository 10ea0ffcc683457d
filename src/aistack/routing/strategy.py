"""Choosing one deployment of a pool: four strategies, one pass each, no allocation.

Every strategy first skips what cannot take a request now: a backend whose probe
failed, a circuit that is open (or half-open with its trial in flight), a deployment at
its `max_in_flight`, one whose model is draining for a switch, and those this request
already tried. Then **where the model is loaded comes first**: the deployments are
ranked by tier (routing/loaded.py: loaded, then cold but fits, then cold after
unloading idle models; a cold model whose way is blocked is not picked at all), and the
strategy picks within the best tier. Reading a slot's tier is one attribute when the
model is loaded there; the memory rules run only for cold deployments on a GPU with a
known budget. Among the best tier:

- least-in-flight: the fewest requests in flight; ties go round robin (the scan starts
  one further along on every pick), so an idle pool is served in turn.
- latency: the lowest expected wait, the moving average of time to first token times
  (requests in flight + 1). A deployment with no recent sample (none yet, or older than
  30 s) is tried first when idle, so a slow one is measured again now and then.
- weighted: smooth weighted round robin (nginx's): over any run of picks each
  deployment's share is its weight's share, interleaved rather than in bursts.
- priority: the lowest `priority` number; ties by least in flight, then round robin.
"""

from __future__ import annotations

from aistack.routing.loaded import FITS, LOADED, NOT_NOW
from aistack.routing.state import LATENCY_STALE, Slot

LEAST_IN_FLIGHT = 0
LATENCY = 1
WEIGHTED = 2
PRIORITY = 3

STRATEGIES: dict[str, int] = {
    "least-in-flight": LEAST_IN_FLIGHT,
    "latency": LATENCY,
    "weighted": WEIGHTED,
    "priority": PRIORITY,
}

_UNMEASURED_BUSY = 1e12  # no sample yet, but one is on its way: last resort
_PRIORITY_STEP = float(1 << 24)  # priority dominates in-flight counts


def tier(s: Slot, now: float, hold: float) -> int:
    """LOADED, FITS, SWITCH or NOT_NOW for this deployment's model on its GPU."""
    r = s.res
    if r.loaded:
        return LOADED
    card = r.card
    if card is None or not card.budget:
        return FITS
    return card.tier(r, now, hold)


def select(
    slots: list[Slot],
    strategy: int,
    now: float,
    start: int = 0,
    exclude: list[Slot] | None = None,
    hold: float = 0.0,
) -> Slot | None:
    """The deployment to call next, or None when none can take a request now.

    `hold`: how long a loaded model keeps its GPU against a switch after its last
    request (0 for a request owed its switch).
    """
    if strategy == WEIGHTED:
        return _weighted(slots, now, exclude, hold)
    n = len(slots)
    best: Slot | None = None
    best_score = 0.0
    best_tier = NOT_NOW
    for i in range(n):
        s = slots[(start + i) % n] if start else slots[i]
        if s.in_flight >= s.cap or not s.health.up:
            continue
        c = s.circuit
        if c.open_until and (c.open_until > now or c.trial):
            continue
        if exclude is not None and s in exclude:
            continue
        r = s.res
        if r.loaded:
            if r.draining:
                continue
            t = LOADED
        elif best_tier == LOADED:
            continue  # a deployment with the model loaded is already in hand
        else:
            t = tier(s, now, hold)
            if t > best_tier or t == NOT_NOW:
                continue
        if strategy == LEAST_IN_FLIGHT:
            score = float(s.in_flight)
        elif strategy == PRIORITY:
            score = s.priority * _PRIORITY_STEP + s.in_flight
        elif s.ttft == 0.0 or now - s.ttft_at > LATENCY_STALE:
            score = 0.0 if s.in_flight == 0 else _UNMEASURED_BUSY + s.in_flight
        else:
            score = s.ttft * (s.in_flight + 1)
        if best is None or t < best_tier or score < best_score:
            best, best_score, best_tier = s, score, t
    return best


def _eligible(s: Slot, now: float, exclude: list[Slot] | None) -> bool:
    if s.in_flight >= s.cap or not s.health.up:
        return False
    c = s.circuit
    if c.open_until and (c.open_until > now or c.trial):
        return False
    if s.res.draining:
        return False
    return exclude is None or s not in exclude


def _weighted(
    slots: list[Slot], now: float, exclude: list[Slot] | None, hold: float
) -> Slot | None:
    # The shares apply within the best tier: find it first (one pass, no allocation).
    top = NOT_NOW
    for s in slots:
        if _eligible(s, now, exclude):
            t = tier(s, now, hold)
            if t < top:
                top = t
                if t == LOADED:
                    break
    if top == NOT_NOW:
        return None
    best: Slot | None = None
    total = 0.0
    for s in slots:
        if not _eligible(s, now, exclude) or tier(s, now, hold) != top:
            continue
        s.current += s.weight
        total += s.weight
        if best is None or s.current > best.current:
            best = s
    if best is not None:
        best.current -= total
    return best
