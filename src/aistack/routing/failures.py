"""What a failed attempt means: for the request (answer now, try elsewhere, go to the
context chain) and for its deployment (counted against its circuit or not), and what
to answer when nothing in a chain is available. The router (routing/router.py) asks."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from aistack.core.errors import ErrorKind, GatewayError
from aistack.routing.pools import Pool

# What a failed attempt means for the request and for the deployment.
_CONTEXT = 0  # the prompt is too long for this model: go to the context chain
_FATAL = 1  # the caller's doing: answer now
_SKIP = 2  # not here (404): try elsewhere, no penalty
_FAIL = 3  # the deployment's fault: counts against its circuit, try elsewhere

_DEPLOYMENT_FAULTS = (
    ErrorKind.UPSTREAM_UNREACHABLE,
    ErrorKind.UPSTREAM_TIMEOUT,
    ErrorKind.UPSTREAM_FAILED,
    ErrorKind.UPSTREAM_ERROR,
    ErrorKind.UPSTREAM_RATE_LIMITED,
    ErrorKind.INTERNAL,
)


def _again(e: GatewayError) -> bool:
    """Worth asking the same deployment again after a pause: it could not be reached,
    answered nonsense, or said it is briefly unable (a 5xx). Not our timeout (it already
    cost the caller that long), not a 429 (its cooldown says when)."""
    if e.kind is ErrorKind.UPSTREAM_UNREACHABLE:
        return True
    if e.upstream_status is None:
        return e.kind is ErrorKind.UPSTREAM_FAILED
    return e.kind.upstream and e.upstream_status in (500, 502, 503, 504)


def _busy_answer(e: GatewayError) -> bool:
    """The backend said it is busy (429, 503): worth waiting out, like a full pool."""
    return e.kind is ErrorKind.UPSTREAM_RATE_LIMITED or e.kind is ErrorKind.UPSTREAM_ERROR


def _verdict(e: GatewayError) -> int:
    if e.code == "context_length_exceeded":
        return _CONTEXT
    if e.kind in _DEPLOYMENT_FAULTS:
        return _FAIL
    if e.kind is ErrorKind.NOT_FOUND:
        return _SKIP
    return _FATAL


# The kind of "nothing is available" by the status its deployments failed with.
_UNAVAILABLE = {
    429: ErrorKind.UPSTREAM_RATE_LIMITED,
    502: ErrorKind.UPSTREAM_UNREACHABLE,
    504: ErrorKind.UPSTREAM_TIMEOUT,
}


def unavailable(name: str, chain: Sequence[Pool]) -> GatewayError:
    """Nothing in the chain can take a request: say why, and when to come back.

    The status is what the failures that took the deployments out were (502
    unreachable, 504 timed out, 429 rate limited) when they agree, else 503, so a
    client sees the same status whether the failure is found now or was found by
    an earlier request or a probe.
    """
    now = time.monotonic()
    parts: list[str] = []
    statuses: set[int] = set()
    retry_at = math.inf
    for pool in chain:
        for s in pool.slots:
            state = s.state(now)
            if state == "cooldown":
                retry_at = min(retry_at, s.circuit.open_until)
                statuses.add(s.last_status or 503)
                left = s.circuit.open_until - now
                why = s.last_error or "failing"
                parts.append(f"{s.key} cooling down for {left:.0f}s after: {why}")
            elif state == "down":
                statuses.add(s.health.status or 502)
                parts.append(f"{s.key} down: {s.health.error or 'its probe failed'}")
            elif state == "half-open":
                statuses.add(503)
                retry_at = min(retry_at, now + 1)
                parts.append(f"{s.key} being tried again")
    detail = "; ".join(parts) if parts else "no deployments"
    status = statuses.pop() if len(statuses) == 1 else 503
    if status < 429 or status == 501:
        status = 503
    kind = _UNAVAILABLE.get(status, ErrorKind.UPSTREAM_ERROR)
    return GatewayError(
        kind,
        f"no deployment of '{name}' is available: {detail}",
        retry_after=max(1.0, retry_at - now) if retry_at != math.inf else None,
    )
