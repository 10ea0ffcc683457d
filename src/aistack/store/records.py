"""What the store keeps and answers: key records, ledger rows, usage reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aistack.store.calendar import Period, iso

GROUPS = ("key", "model", "backend", "day")


class StoreError(Exception):
    """The database said no, or is not at the schema this version needs."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored: never the key itself, only its SHA-256."""

    id: str
    name: str
    hash: str
    hint: str  # "sk-aistack-…AbCd": enough to recognise a key in a list
    created_at: int  # ms since the epoch
    models: tuple[str, ...] = ()  # globs; empty: every model
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    budget: float | None = None  # USD per budget_period
    budget_period: Period | None = None
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None
    scopes: tuple[str, ...] = ()  # rights beyond the model APIs' (access/scopes.py)
    images_per_minute: int | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "models": list(self.models),
            "scopes": list(self.scopes),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "concurrent": self.concurrent,
            "images_per_minute": self.images_per_minute,
            "budget": self.budget,
            "budget_period": self.budget_period,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }

    def state(self, now: int) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A console session as stored: its id is the SHA-256 of the cookie, never the cookie."""

    id: str
    name: str
    role: str  # "admin" | "viewer"
    via: str  # "master key" | "admin key" | "sign-in link" | "forward auth"
    groups: tuple[str, ...]  # forward auth: the groups the proxy named at sign-in
    credential: str  # the fingerprint of the credential that signed it in, if any
    created_at: int  # ms since the epoch
    expires_at: int
    revoked_at: int | None = None


class UsageRow(NamedTuple):
    """One request in the ledger. A tuple, so the hot path builds it in one step."""

    ts: int  # ms since the epoch when the request arrived
    request_id: str
    key_id: str
    app: str
    end_user: str
    dialect: str
    route: str
    model: str  # the name the caller asked for
    backend: str  # "" when no backend was reached
    upstream_model: str  # the deployment's model name on that backend
    stream: int
    status: int
    error: str
    tokens_in: int
    tokens_out: int
    tokens_estimated: int  # 1: the gateway counted, the backend did not say
    ttft_ms: float | None
    duration_ms: float
    cost: float | None  # USD; None: unknown (a metered backend with no price)
    cost_source: str  # "backend" | "price" | "local" | "unknown" | "" (no tokens)
    attempts: int
    images: int = 0  # images made (image requests and jobs)
    gpu_ms: float = 0.0  # the backend's time making them
    # 1: the answer ended before its last chunk (client gone, backend broke, server cut):
    # its tokens are what was streamed until then (estimated, tokens_estimated = 1)
    partial: int = 0
    points: int = 0  # vector points written or returned (vector operations)


USAGE_COLUMNS = UsageRow._fields


@dataclass(slots=True)
class ReportRow:
    group: dict[str, str]
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    cost_unknown: int = 0  # requests whose cost nobody knows
    duration_ms: float = 0.0  # summed
    images: int = 0
    gpu_ms: float = 0.0
    partial: int = 0  # requests that ended before their answer's last chunk
    points: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.group,
            "requests": self.requests,
            "errors": self.errors,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": round(self.cost, 8),
            "cost_unknown": self.cost_unknown,
            "avg_duration_ms": round(self.duration_ms / self.requests, 1) if self.requests else 0,
            "images": self.images,
            "gpu_seconds": round(self.gpu_ms / 1000, 3),
            "partial": self.partial,
            "points": self.points,
        }


@dataclass(slots=True)
class Report:
    by: tuple[str, ...]
    since_ms: int
    rows: list[ReportRow] = field(default_factory=list)
    # True when part of the range came from daily aggregates (whole UTC days).
    rolled_up: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON both the CLI (--json) and the admin API answer with."""
        return {
            "by": list(self.by),
            "since": iso(self.since_ms),
            "rolled_up": self.rolled_up,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
        }

    @property
    def total(self) -> ReportRow:
        t = ReportRow(group={})
        for r in self.rows:
            t.requests += r.requests
            t.errors += r.errors
            t.tokens_in += r.tokens_in
            t.tokens_out += r.tokens_out
            t.cost += r.cost
            t.cost_unknown += r.cost_unknown
            t.duration_ms += r.duration_ms
            t.images += r.images
            t.gpu_ms += r.gpu_ms
            t.partial += r.partial
            t.points += r.points
        return t
