"""What the router knows about each deployment and backend, and how that changes.

Plain data and pure transitions, no I/O: the request path reads a few attributes, and
everything that changes state is a method call with the time passed in, so the rules
are tested as tables and could later be backed by a shared store (the state a replica
would publish is `Circuit.open_until` per deployment key, a wall-clock-free deadline
that a shared store would carry as an expiry).

A deployment's circuit is closed (serving), open (cooling down until `open_until`) or
half-open (the cooldown is over; the next request is a trial, and no other request goes
there until the trial has its first chunk). Only failures that are the backend's doing
count: unreachable, timeouts, 5xx, 429, a broken stream. A caller's mistake (400), a
missing model (404), a prompt too long, or a client going away never do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aistack.routing.catalog import Deployment
from aistack.routing.loaded import Resident
from aistack.routing.queue import FairQueue

# Latency-aware routing: weight of a new time-to-first-token sample in the moving
# average, and how old the last sample may be before the deployment is asked again.
LATENCY_ALPHA = 0.3
LATENCY_STALE = 30.0

NO_CAP = 1 << 30


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    failures: int = 3
    seconds: float = 10.0
    max_seconds: float = 300.0


@dataclass(slots=True)
class Circuit:
    failures: int = 0  # consecutive failures
    open_until: float = 0.0  # monotonic deadline; 0: closed
    cooldown: float = 0.0  # length of the last cooldown, doubled by a failed trial
    trial: bool = False  # a half-open trial is in flight
    rate_limited: bool = False  # opened by a 429: no probe may shorten it
    unreachable: bool = False  # opened because it could not be reached: a probe may end it
    busy: bool = False  # opened by a busy answer (429, 503): requests wait it out
    opened: int = 0  # times opened, for /health

    def state(self, now: float) -> str:
        if not self.open_until:
            return "closed"
        return "open" if self.open_until > now else "half-open"

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.cooldown = 0.0
        self.trial = False
        self.rate_limited = False
        self.unreachable = False
        self.busy = False

    def failure(
        self,
        now: float,
        policy: CooldownPolicy,
        *,
        rate_limited: bool = False,
        retry_after: float | None = None,
        unreachable: bool = False,
        busy: bool = False,
    ) -> bool:
        """Count a failure; True when it opened the circuit."""
        self.failures += 1
        if self.trial or (self.open_until and self.open_until <= now):
            # A failed trial: out again, for twice as long.
            length = min(policy.max_seconds, max(policy.seconds, self.cooldown * 2))
        elif rate_limited or (self.failures >= policy.failures and not self.open_until):
            length = policy.seconds
        else:
            return False
        if rate_limited and retry_after is not None:
            # The backend said when to come back; honour it (bounded by max_seconds).
            length = min(policy.max_seconds, max(retry_after, 0.0))
        self.trial = False
        self.rate_limited = rate_limited
        self.unreachable = unreachable
        self.busy = busy or rate_limited
        self.cooldown = length
        self.open_until = now + length
        self.opened += 1
        return True

    def release_trial(self) -> None:
        """A trial ended without a verdict (the caller went away): let another try."""
        self.trial = False

    def probe_ok(self, now: float) -> None:
        """The backend answers its health probe again: end a cooldown that was about
        reaching it (the next request is a trial). One for 429s, 5xx or slow answers
        stands: a probe proves the box is up, not that those stopped."""
        if self.open_until > now and self.unreachable:
            self.open_until = now


@dataclass(slots=True)
class BackendHealth:
    """The last background probe of one backend."""

    name: str
    kind: str
    up: bool = True  # False only after a failed probe
    probed: bool = False  # at least one probe ran (local backends are never probed)
    error: str = ""
    status: int = 0  # the status a request would have got (502 unreachable, 504 timeout)
    latency: float | None = None  # seconds, of the last successful probe
    checked_at: float = 0.0  # unix seconds
    failures: int = 0  # consecutive failed probes


@dataclass(slots=True, eq=False)
class Slot:
    """One deployment in the router: its settings and its live state.

    A slot outlives catalog refreshes (the catalog builds new `Deployment` values every
    few seconds; the slot keeps its counters and swaps the value).
    """

    dep: Deployment
    health: BackendHealth
    weight: float = 1.0
    priority: int = 0
    cap: int = NO_CAP  # max in flight
    in_flight: int = 0
    circuit: Circuit = field(default_factory=Circuit)
    ttft: float = 0.0  # moving average, seconds; 0: no sample yet
    ttft_at: float = 0.0  # monotonic time of the last sample
    current: float = 0.0  # smooth weighted round robin
    # Counters and the last failure, for /health and metrics.
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    last_status: int = 0
    last_error_at: float = 0.0  # unix seconds
    # The model's memory on that backend (shared by every name it is served under), and
    # the line of requests waiting for this model (shared by its deployments).
    res: Resident = field(default_factory=Resident)
    queue: FairQueue[Slot] | None = None

    @property
    def key(self) -> str:
        return self.dep.key

    def sample_ttft(self, seconds: float, now: float) -> None:
        if self.ttft == 0.0 or now - self.ttft_at > LATENCY_STALE:
            self.ttft = seconds
        else:
            self.ttft += LATENCY_ALPHA * (seconds - self.ttft)
        self.ttft_at = now

    def state(self, now: float) -> str:
        """ok, cooldown, half-open, down (probe failed), busy (at its cap), or draining
        (its model is to be unloaded for a switch: no new requests)."""
        if not self.health.up:
            return "down"
        c = self.circuit.state(now)
        if c == "open":
            return "cooldown"
        if c == "half-open":
            return "half-open"
        if self.in_flight >= self.cap:
            return "busy"
        return "draining" if self.res.draining else "ok"
