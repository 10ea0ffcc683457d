"""Choosing one deployment of a pool: four strategies, one pass each, no allocation.

Every strategy first skips what cannot take a request now: a backend whose probe
failed, a circuit that is open (or half-open with its trial in flight), a deployment at
its `max_in_flight`, one whose model is draining for a switch, and those this request
already tried. Then **where the model is loaded comes first**: the deployments whose
backend says what it holds are ranked by tier (routing/loaded.py: loaded, then cold but
fits, then cold after unloading idle models; a cold model whose way is blocked is not
picked at all), and the strategy picks within the best tier; deployments of other
kinds (which say nothing about memory) compete with that pick by the strategy alone.
Reading a slot's tier is one attribute when the model is loaded there; the memory rules
run only for cold deployments on a GPU with a known budget. Among those:

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

    Deployments whose backend says what it holds are ranked by tier, then score; the
    others (OpenAI-compatible servers, the cloud) by score alone, against the best of
    the first: affinity orders the fleet, it never overrides the strategy between kinds.
    `hold`: how long a loaded model keeps its GPU against a switch after its last
    request (0 for a request owed its switch).
    """
    if strategy == WEIGHTED:
        return _weighted(slots, now, exclude, hold)
    # The first pass takes loaded deployments and other kinds; a cold deployment's tier
    # (the memory rules) is worked out in a second pass, only when none has it loaded.
    n = len(slots)
    best: Slot | None = None  # of the backends that say what they hold
    best_score = 0.0
    best_tier = NOT_NOW
    best_i = 0
    other: Slot | None = None  # of the rest
    other_score = 0.0
    other_i = 0
    cold = False
    second = False
    while True:
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
            if r.draining:
                continue
            if r.card is None or r.loaded:
                if second:
                    continue
                t = LOADED
            elif not second:
                cold = True
                continue
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
            if r.card is None:
                if other is None or score < other_score:
                    other, other_score, other_i = s, score, i
            elif best is None or t < best_tier or score < best_score:
                best, best_score, best_tier, best_i = s, score, t, i
        if second or best is not None or not cold:
            break
        second = True
    if other is None:
        return best
    if best is None or other_score < best_score or (other_score == best_score and other_i < best_i):
        return other
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
    # The shares apply among the deployments of the best tier (of the backends that say
    # what they hold) and every other kind: find that tier first (no allocation).
    top = NOT_NOW
    for s in slots:
        if s.res.card is not None and _eligible(s, now, exclude):
            t = tier(s, now, hold)
            if t < top:
                top = t
                if t == LOADED:
                    break
    best: Slot | None = None
    total = 0.0
    for s in slots:
        if not _eligible(s, now, exclude):
            continue
        if s.res.card is not None and tier(s, now, hold) != top:
            continue
        s.current += s.weight
        total += s.weight
        if best is None or s.current > best.current:
            best = s
    if best is not None:
        best.current -= total
    return best
