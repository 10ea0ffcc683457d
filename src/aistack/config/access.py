"""Who may call and what it costs: `auth:`, `limits:`, `ledger:`, `prices:` and the
console's sign-ins (`console:`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from aistack.config.base import Strict


class AuthConfig(Strict):
    # Grants every model and the admin API. Unset: $AISTACK_MASTER_KEY, when set. Without
    # either, `aistack serve` creates an admin credential in data_dir (access/credential.py).
    master_key: str | None = None
    # None: open only while there is no master key and no virtual key (and then serve
    # binds only to loopback). true: requests without a key are served. false: never.
    open: bool | None = None
    # Proxies (CIDRs) whose forward-auth headers (X-authentik-username, -groups) count.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # Forward-auth users in any of these groups are admins; empty: any forwarded user.
    admin_groups: list[str] = msgspec.field(default_factory=list)
    # Forward-auth users in any of these groups (and not an admin group) may look but
    # not change: the console and the admin API read-only. Needs admin_groups set.
    viewer_groups: list[str] = msgspec.field(default_factory=list)
    # Seconds between reloads of keys and budget spend from the database.
    refresh: float = 5.0
    # Seconds between looks at the database's change stamp: a key created or revoked, or
    # a console sign-out, anywhere (another replica, a worker, the CLI) counts here
    # within this time. One indexed row read per look.
    watch: float = 0.5
    # /health answers its details (each backend's URL, state, last error) to anyone.
    # false: only to an admin or a key with scope `metrics`; others get the summary.
    public_health: bool = False


class LimitsConfig(Strict):
    # When Redis cannot be reached: "local" limits per replica, or "reject" with 503.
    on_redis_error: Literal["local", "reject"] = "local"
    redis_prefix: str = "aistack:"
    # Seconds a concurrency slot is held at most if its replica dies mid-request.
    lease: float = 900.0


class LedgerConfig(Strict):
    enabled: bool = True
    # Seconds between writes; what a SIGKILL can lose at most.
    flush_interval: float = 1.0
    batch_size: int = 500
    # Rows waiting beyond this are dropped (and counted) rather than slowing requests.
    queue_size: int = 100_000
    # Days raw rows are kept; daily sums are kept for ever. 0 keeps raw rows for ever.
    retention_days: int = 30


class PriceConfig(Strict):
    """USD per million tokens; for image models, per image and per second of GPU time."""

    input: float = 0.0
    output: float = 0.0
    image: float = 0.0
    second: float = 0.0


class ConsoleConfig(Strict):
    """The web console at /ui (console/)."""

    enabled: bool = True
    # How long a sign-in lasts. Sessions live in the database (every replica shares
    # them, and a sign-out holds on all of them).
    session_hours: float = 12.0
