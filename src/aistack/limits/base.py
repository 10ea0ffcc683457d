"""Per-key limits: requests and tokens per minute, concurrent requests.

Rates use GCRA (the generic cell rate algorithm, a token bucket kept as one
timestamp): a key may spend its whole minute at once, then earns capacity back
evenly, and a refusal knows exactly when to come back (Retry-After). Unlike fixed
windows there is no double burst at a minute boundary, and the state per key is one
number, which is what makes the Redis variant a single round trip.

Tokens are known only after the answer, so `tpm` is checked before a request (is the
key's bucket already empty?) and charged after it (the tokens it used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

WINDOW = 60.0  # seconds: the "minute" of rpm and tpm
# Float sums of 60/rpm must not refuse the rpm-th request of a burst.
EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Quota:
    """A key's limits; None (or 0) means no limit."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    ipm: int | None = None  # images per minute (image requests say how many they make)

    @property
    def empty(self) -> bool:
        return not (self.rpm or self.tpm or self.concurrent or self.ipm)


@dataclass(frozen=True, slots=True)
class Denied:
    limit: str  # "rpm" | "tpm" | "concurrent" | "ipm" | "unavailable"
    retry_after: float  # seconds


class Ticket:
    """An admitted request's claim, handed back when it ends (tokens, the slot)."""

    __slots__ = ("key_id", "local", "quota", "slot")

    def __init__(self, key_id: str, quota: Quota, slot: str, local: bool = True) -> None:
        self.key_id = key_id
        self.quota = quota
        self.slot = slot  # holds a concurrency slot when not ""
        self.local = local  # admitted by the in-process limiter


class Limiter(Protocol):
    kind: str

    async def admit(self, key_id: str, quota: Quota) -> Ticket | Denied: ...

    async def admit_images(self, key_id: str, per_minute: int, n: int) -> Denied | None:
        """Take `n` images of the key's `per_minute` (GCRA, as rpm), or say when to come
        back."""

    def done(self, ticket: Ticket, tokens: int) -> None:
        """The request ended having used `tokens`: charge them, free its slot. Never blocks."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, object]: ...
