"""Choosing one deployment of a pool: four strategies, one pass each, no allocation.

Every strategy first skips what cannot take a request now: a backend whose probe
failed, a circuit that is open (or half-open with its trial in flight), a deployment at
its `max_in_flight`, and those this request already tried. Among the rest:

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


def select(
    slots: list[Slot],
    strategy: int,
    now: float,
    start: int = 0,
    exclude: list[Slot] | None = None,
) -> Slot | None:
    """The deployment to call next, or None when none can take a request now."""
    if strategy == WEIGHTED:
        return _weighted(slots, now, exclude)
    n = len(slots)
    best: Slot | None = None
    best_score = 0.0
    for i in range(n):
        s = slots[(start + i) % n] if start else slots[i]
        if s.in_flight >= s.cap or not s.health.up:
            continue
        c = s.circuit
        if c.open_until and (c.open_until > now or c.trial):
            continue
        if exclude is not None and s in exclude:
            continue
        if strategy == LEAST_IN_FLIGHT:
            score = float(s.in_flight)
        elif strategy == PRIORITY:
            score = s.priority * _PRIORITY_STEP + s.in_flight
        elif s.ttft == 0.0 or now - s.ttft_at > LATENCY_STALE:
            score = 0.0 if s.in_flight == 0 else _UNMEASURED_BUSY + s.in_flight
        else:
            score = s.ttft * (s.in_flight + 1)
        if best is None or score < best_score:
            best, best_score = s, score
    return best


def _weighted(slots: list[Slot], now: float, exclude: list[Slot] | None) -> Slot | None:
    best: Slot | None = None
    total = 0.0
    for s in slots:
        if s.in_flight >= s.cap or not s.health.up:
            continue
        c = s.circuit
        if c.open_until and (c.open_until > now or c.trial):
            continue
        if exclude is not None and s in exclude:
            continue
        s.current += s.weight
        total += s.weight
        if best is None or s.current > best.current:
            best = s
    if best is not None:
        best.current -= total
    return best
