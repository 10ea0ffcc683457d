"""Selection and cooldown rules, as tables: what each strategy picks, and where it sends
a few hundred requests; how a circuit opens, half-opens and closes.

These are the pure parts of the router (routing/strategy.py, routing/state.py), driven
directly with real slots; tests/test_routing.py drives the whole thing through real
processes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from aistack.core.models import ModelCard
from aistack.routing.catalog import Deployment
from aistack.routing.state import NO_CAP, BackendHealth, Circuit, CooldownPolicy, Slot
from aistack.routing.strategy import LATENCY, LEAST_IN_FLIGHT, PRIORITY, WEIGHTED, select


@dataclass
class _Named:
    """Just enough of a backend for a Deployment's name (selection never calls it)."""

    name: str
    kind: str = "ollama"


def slot(
    name: str,
    *,
    in_flight: int = 0,
    weight: float = 1.0,
    priority: int = 0,
    cap: int = NO_CAP,
    ttft: float = 0.0,
    ttft_at: float = 0.0,
    up: bool = True,
    open_until: float = 0.0,
    trial: bool = False,
) -> Slot:
    dep = Deployment(_Named(name), "m", ModelCard(name="m", backend=name))  # type: ignore[arg-type]
    s = Slot(dep, BackendHealth(name, "ollama", up=up), weight=weight, priority=priority, cap=cap)
    s.in_flight = in_flight
    s.ttft, s.ttft_at = ttft, ttft_at
    s.circuit.open_until, s.circuit.trial = open_until, trial
    return s


def names(slots: list[Slot | None]) -> list[str]:
    return [s.dep.backend.name if s is not None else "-" for s in slots]


NOW = 1000.0

# (strategy, slots, expected pick)
PICKS = [
    (
        "least: fewest in flight",
        LEAST_IN_FLIGHT,
        [slot("a", in_flight=2), slot("b", in_flight=1)],
        "b",
    ),
    (
        "least: skips a backend that is down",
        LEAST_IN_FLIGHT,
        [slot("a", up=False), slot("b", in_flight=5)],
        "b",
    ),
    (
        "least: skips an open circuit",
        LEAST_IN_FLIGHT,
        [slot("a", open_until=NOW + 5), slot("b", in_flight=3)],
        "b",
    ),
    (
        "least: a half-open circuit takes a trial",
        LEAST_IN_FLIGHT,
        [slot("a", open_until=NOW - 1), slot("b", in_flight=3)],
        "a",
    ),
    (
        "least: but only one trial at a time",
        LEAST_IN_FLIGHT,
        [slot("a", open_until=NOW - 1, trial=True), slot("b", in_flight=3)],
        "b",
    ),
    (
        "least: skips one at its cap",
        LEAST_IN_FLIGHT,
        [slot("a", cap=2, in_flight=2), slot("b", in_flight=7)],
        "b",
    ),
    (
        "least: nothing eligible",
        LEAST_IN_FLIGHT,
        [slot("a", up=False), slot("b", cap=1, in_flight=1)],
        "-",
    ),
    (
        "priority: lowest number first",
        PRIORITY,
        [slot("a", priority=1), slot("b", priority=0, in_flight=9)],
        "b",
    ),
    (
        "priority: ties by in flight",
        PRIORITY,
        [slot("a", in_flight=2), slot("b", in_flight=1), slot("c", priority=1)],
        "b",
    ),
    (
        "priority: next rank when the first is down",
        PRIORITY,
        [slot("a", up=False), slot("b", priority=1)],
        "b",
    ),
    ("priority: negative ranks allowed", PRIORITY, [slot("a"), slot("b", priority=-1)], "b"),
    (
        "latency: the fastest",
        LATENCY,
        [slot("a", ttft=0.5, ttft_at=NOW), slot("b", ttft=0.1, ttft_at=NOW)],
        "b",
    ),
    (
        "latency: load counts (0.1 x 6 > 0.5 x 1)",
        LATENCY,
        [slot("a", ttft=0.5, ttft_at=NOW), slot("b", ttft=0.1, ttft_at=NOW, in_flight=5)],
        "a",
    ),
    (
        "latency: an unmeasured idle one is tried first",
        LATENCY,
        [slot("a", ttft=0.1, ttft_at=NOW), slot("b")],
        "b",
    ),
    (
        "latency: a stale sample counts as unmeasured",
        LATENCY,
        [slot("a", ttft=0.1, ttft_at=NOW), slot("b", ttft=9.0, ttft_at=NOW - 60)],
        "b",
    ),
    (
        "latency: unmeasured but busy is a last resort",
        LATENCY,
        [slot("a", ttft=2.0, ttft_at=NOW, in_flight=3), slot("b", in_flight=1)],
        "a",
    ),
    ("weighted: the heavier first", WEIGHTED, [slot("a", weight=1), slot("b", weight=3)], "b"),
    (
        "weighted: skips what is down",
        WEIGHTED,
        [slot("a", weight=1), slot("b", weight=3, up=False)],
        "a",
    ),
]


@pytest.mark.parametrize(
    ("case", "strategy", "slots", "expected"), PICKS, ids=[p[0] for p in PICKS]
)
def test_each_strategy_picks_by_its_definition(
    case: str, strategy: int, slots: list[Slot], expected: str
) -> None:
    assert names([select(slots, strategy, NOW)]) == [expected]


def test_a_request_never_gets_a_deployment_it_already_tried() -> None:
    a, b = slot("a"), slot("b", in_flight=4)
    for strategy in (LEAST_IN_FLIGHT, LATENCY, WEIGHTED, PRIORITY):
        assert select([a, b], strategy, NOW, exclude=[a]) is b
        assert select([a, b], strategy, NOW, exclude=[a, b]) is None


def run_sequential(slots: list[Slot], strategy: int, n: int) -> Counter[str]:
    """n requests one after another, each done before the next (as a pool sees them
    from one client)."""
    got: Counter[str] = Counter()
    for i in range(n):
        s = select(slots, strategy, NOW, start=i)
        assert s is not None
        got[s.dep.backend.name] += 1
    return got


def run_concurrent(slots: list[Slot], strategy: int, n: int, hold: dict[str, int]) -> Counter[str]:
    """n requests where each stays in flight for `hold[backend]` further picks (a slow
    backend holds its requests longer)."""
    got: Counter[str] = Counter()
    ends: list[tuple[int, Slot]] = []
    for i in range(n):
        for end, s in [e for e in ends if e[0] <= i]:
            s.in_flight -= 1
            ends.remove((end, s))
        s = select(slots, strategy, NOW, start=i)
        assert s is not None
        s.in_flight += 1
        ends.append((i + hold[s.dep.backend.name], s))
        got[s.dep.backend.name] += 1
    return got


def test_least_in_flight_serves_an_idle_pool_in_turn() -> None:
    got = run_sequential([slot("a"), slot("b"), slot("c")], LEAST_IN_FLIGHT, 300)
    assert got == {"a": 100, "b": 100, "c": 100}


def test_least_in_flight_sends_more_to_the_backend_that_finishes_sooner() -> None:
    # a holds each request for 10 picks, b for 30: keeping their in-flight counts level
    # means a takes about three times as many.
    got = run_concurrent([slot("a"), slot("b")], LEAST_IN_FLIGHT, 400, {"a": 10, "b": 30})
    assert 2.5 < got["a"] / got["b"] < 3.5, got


def test_weighted_shares_follow_weights_exactly_and_interleave() -> None:
    slots = [slot("a", weight=3), slot("b", weight=1), slot("c", weight=1)]
    got = run_sequential(slots, WEIGHTED, 500)
    assert got == {"a": 300, "b": 100, "c": 100}
    # smooth: never more than three a's in a row
    seq = "".join(names([select(slots, WEIGHTED, NOW) for _ in range(20)]))
    assert "aaaa" not in seq


def test_weighted_with_one_deployment_down_shares_among_the_rest() -> None:
    slots = [slot("a", weight=2), slot("b", weight=1), slot("c", weight=5, up=False)]
    assert run_sequential(slots, WEIGHTED, 300) == {"a": 200, "b": 100}


def test_priority_uses_the_next_rank_only_when_the_first_is_full() -> None:
    slots = [slot("local", priority=0, cap=2), slot("cloud", priority=1)]
    assert run_sequential(slots, PRIORITY, 200) == {"local": 200}
    # four in flight at a time: local takes two (its cap), the overflow goes to the cloud
    got = run_concurrent(slots, PRIORITY, 300, {"local": 4, "cloud": 4})
    assert got["local"] == got["cloud"] == 150


def test_latency_sends_most_requests_to_the_faster_deployment() -> None:
    fast = slot("fast", ttft=0.05, ttft_at=NOW)
    slow = slot("slow", ttft=0.5, ttft_at=NOW)
    assert run_sequential([fast, slow], LATENCY, 300) == {"fast": 300}
    # under load the expected wait evens out: slow gets requests once fast has ten in flight
    got = run_concurrent(
        [slot("fast", ttft=0.05, ttft_at=NOW), slot("slow", ttft=0.5, ttft_at=NOW)],
        LATENCY,
        400,
        {"fast": 20, "slow": 20},
    )
    assert got["fast"] > 3 * got["slow"] > 0, got


def test_latency_samples_form_a_moving_average() -> None:
    s = slot("a")
    s.sample_ttft(1.0, NOW)
    assert s.ttft == 1.0
    s.sample_ttft(2.0, NOW + 1)
    assert s.ttft == pytest.approx(1.3)
    s.sample_ttft(5.0, NOW + 100)  # after a long gap the old average means nothing
    assert s.ttft == 5.0


POLICY = CooldownPolicy(failures=3, seconds=10, max_seconds=60)


def test_a_circuit_opens_after_consecutive_failures_only() -> None:
    c = Circuit()
    assert not c.failure(NOW, POLICY)
    c.success()  # a success in between resets the count
    assert not c.failure(NOW, POLICY)
    assert not c.failure(NOW, POLICY)
    assert c.failure(NOW, POLICY)
    assert c.state(NOW) == "open" and c.open_until == NOW + 10
    assert not c.failure(NOW + 1, POLICY)  # late failures of requests already in flight
    assert c.open_until == NOW + 10


def test_a_429_opens_at_once_for_its_retry_after() -> None:
    c = Circuit()
    assert c.failure(NOW, POLICY, rate_limited=True, retry_after=2.5)
    assert c.open_until == NOW + 2.5 and c.rate_limited
    c2 = Circuit()
    assert c2.failure(NOW, POLICY, rate_limited=True)  # none given: the base cooldown
    assert c2.open_until == NOW + 10
    c3 = Circuit()
    c3.failure(NOW, POLICY, rate_limited=True, retry_after=86400)  # bounded by max_seconds
    assert c3.open_until == NOW + 60


def test_half_open_trial_closes_on_success_and_doubles_on_failure() -> None:
    c = Circuit()
    for _ in range(3):
        c.failure(NOW, POLICY)
    assert c.state(NOW + 10) == "half-open"
    c.trial = True
    assert c.failure(NOW + 10, POLICY)  # the trial failed: out for twice as long
    assert c.open_until == NOW + 30 and not c.trial
    c.trial = True
    assert c.failure(NOW + 30, POLICY)
    assert c.open_until == NOW + 70
    for t in (70, 130, 190):
        c.failure(NOW + t, POLICY)
    assert c.cooldown == 60  # capped
    c.success()
    assert c.state(NOW + 200) == "closed" and c.failures == 0 and c.cooldown == 0


def test_a_probe_ends_an_unreachable_cooldown_but_not_one_for_429s_or_5xx() -> None:
    c = Circuit()
    for _ in range(3):
        c.failure(NOW, POLICY, unreachable=True)
    c.probe_ok(NOW + 1)
    assert c.state(NOW + 1) == "half-open"
    r = Circuit()
    r.failure(NOW, POLICY, rate_limited=True, retry_after=30)
    r.probe_ok(NOW + 1)
    assert r.state(NOW + 1) == "open"
    f = Circuit()
    for _ in range(3):
        f.failure(NOW, POLICY)  # 503s, timeouts: the box answers probes all along
    f.probe_ok(NOW + 1)
    assert f.state(NOW + 1) == "open"


def test_slot_state_says_why_it_is_not_serving() -> None:
    assert slot("a").state(NOW) == "ok"
    assert slot("a", up=False).state(NOW) == "down"
    assert slot("a", open_until=NOW + 1).state(NOW) == "cooldown"
    assert slot("a", open_until=NOW - 1).state(NOW) == "half-open"
    assert slot("a", cap=1, in_flight=1).state(NOW) == "busy"
