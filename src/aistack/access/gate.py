"""The gate every request passes: who is calling, may they use this model now, what it cost.

On the request path everything here is in memory: a SHA-256 of the presented key, a
dict lookup, a constant-time compare, a few float operations for the limits (or one
Redis round trip when `redis_url` is set), and after the answer a tuple appended to
the ledger's queue. The keys and the spend that budgets are checked against are
refreshed from the store every `auth.refresh` seconds by a background task, so
revoking a key from the CLI or another replica takes effect within that interval;
keys created or revoked through this replica's admin API take effect at once.

Auth modes:
- open: no master key and no virtual keys yet (or `auth.open: true`): requests need no
  key. Implicitly open serves local callers only: a request that came through a
  reverse proxy gets 401. A key that is presented and known is still honoured (its
  limits, its name in the ledger); one that is unknown is ignored, since SDKs insist on
  sending something ("ollama", "none"). A known key revoked or expired is refused.
- keys: every model request needs the master key or a live virtual key; 401 otherwise.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aistack.access.keys import NewKey, digest, hint, new_key, new_key_id
from aistack.access.ledger import Ledger
from aistack.access.pricing import Prices
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Usage
from aistack.core.models import canonical
from aistack.core.operations import Operation
from aistack.limits.base import Denied, Limiter, Quota, Ticket
from aistack.store import KeyRecord, Store, StoreError, UsageRow
from aistack.store.calendar import Period, iso, now_ms, period_end_ms, period_start

log = logging.getLogger("aistack.auth")


class KeyInfo:
    """A key as the hot path needs it, built from its record at each refresh."""

    __slots__ = (
        "_allowed", "_pattern", "budget", "digest", "expires_at", "id", "limited", "name",
        "period", "quota", "restricted", "revoked",
    )  # fmt: skip

    def __init__(self, rec: KeyRecord | None, *, id: str = "", name: str = "") -> None:
        self.id = rec.id if rec else id
        self.name = rec.name if rec else name
        self.digest = bytes.fromhex(rec.hash) if rec else b""
        self.revoked = bool(rec and rec.revoked_at is not None)
        self.expires_at = rec.expires_at / 1000 if rec and rec.expires_at else None
        self.quota = Quota(rec.rpm, rec.tpm, rec.concurrent) if rec else Quota()
        self.budget = rec.budget if rec else None
        self.period: Period = (rec.budget_period if rec else None) or "month"
        models = rec.models if rec else ()
        self._pattern = (
            re.compile("|".join(fnmatch.translate(_pattern_form(m)) for m in models))
            if models
            else None
        )
        self._allowed: dict[str, bool] = {}
        self.limited = not self.quota.empty
        self.restricted = bool(self._pattern or self.limited or self.budget is not None)

    def allows(self, model: str, aliases: Mapping[str, str]) -> bool:
        """Whether the key's model globs match `model`, or what it aliases to."""
        pattern = self._pattern
        if pattern is None:
            return True
        hit = self._allowed.get(model)  # remembered per name as asked (refreshes reset it)
        if hit is None:
            hit = any(pattern.match(n) for n in _names(model, aliases))
            if len(self._allowed) > 1024:
                self._allowed.clear()
            self._allowed[model] = hit
        return hit


def _pattern_form(glob: str) -> str:
    """A model glob in canonical form: `gpt-oss` means `gpt-oss:latest`, case ignored."""
    g = glob.strip().lower()
    if any(c in g for c in "*?[") or ":" in g.rsplit("/", 1)[-1]:
        return g
    return canonical(g)


MASTER = KeyInfo(None, id="master", name="master")


class Finished(Protocol):
    """What the gate reads from a finished request (the service's RequestContext)."""

    dialect: str
    route: str
    operation: Operation
    request_id: str
    key_id: str
    app: str
    end_user: str
    model: str
    stream: bool
    attempts: int
    status: int
    error: str
    started_ns: int
    first_ns: int
    end_ns: int
    usage: Usage | None
    ticket: Ticket | None

    @property
    def backend(self) -> str: ...

    @property
    def upstream_model(self) -> str: ...


class Caller(Protocol):
    key: KeyInfo | None
    key_id: str
    app: str
    ticket: Ticket | None


@dataclass(frozen=True, slots=True)
class Admin:
    """Who is using the admin API, and how they proved it."""

    name: str
    via: str  # "master key" | "forward auth" | "session" | "local"
    role: str = "admin"  # "admin" | "viewer" (reads, never changes)

    @property
    def read_only(self) -> bool:
        return self.role != "admin"


class Gate:
    def __init__(
        self,
        store: Store,
        limiter: Limiter,
        prices: Prices,
        *,
        master_key: str | None = None,
        open_mode: bool | None = None,
        trusted_proxies: Sequence[str] = (),
        admin_groups: Sequence[str] = (),
        viewer_groups: Sequence[str] = (),
        refresh: float = 5.0,
        ledger: Mapping[str, Any] | None = None,
        migrate: bool = True,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.prices = prices
        self._master = digest(master_key) if master_key else None
        self.open_setting = open_mode
        self.proxies = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        self.admin_groups = {g.strip() for g in admin_groups if g.strip()}
        self.viewer_groups = {g.strip() for g in viewer_groups if g.strip()}
        self.refresh_every = refresh
        self.migrate = migrate
        led = dict(ledger or {})
        self.ledger_enabled = bool(led.pop("enabled", True))
        self.ledger = Ledger(store, on_written=self._written, **led)
        self._by_hash: dict[bytes, KeyInfo] = {}
        self._by_id: dict[str, KeyInfo] = {}
        self.records: list[KeyRecord] = []
        self.open = open_mode is True or (open_mode is None and self._master is None)
        # Spend per key in its current budget period: committed (the database's total at
        # the last refresh plus what this replica wrote since) and not yet written.
        self._spent: dict[str, float] = {}
        self._unwritten: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def has_master(self) -> bool:
        return self._master is not None

    # -- lifecycle

    async def start(self) -> None:
        st = self.store
        if self.migrate:
            applied = await st.run(st.migrate)
            if applied:
                log.info("database %s: schema now at version %d", st.where, st.latest())
        else:
            await st.run(st.check_schema)
        await self.refresh()
        await self.limiter.start()
        if self.ledger_enabled:
            await self.ledger.start()
        self._say_how()
        self._task = asyncio.create_task(self._refresh_loop(), name="aistack-keys-refresh")

    def _say_how(self) -> None:
        live = sum(1 for r in self.records if r.revoked_at is None)
        if self.open and self.open_setting is None:
            log.warning(
                "auth: OPEN. No master key and no virtual keys: any local process can use "
                "every model without a key. Create one (aistack keys create --name APP) or "
                "set auth.master_key, and keys are required from then on"
            )
        elif self.open:
            log.warning("auth: open (auth.open: true): requests without a key are served")
        else:
            log.info(
                "auth: keys required (%d live virtual keys%s)",
                live,
                ", master key set" if self._master else "",
            )
        where = f"{self.store.kind} {self.store.where}"
        if self.ledger_enabled:
            log.info("usage ledger: %s, written every %g s", where, self.ledger.flush_interval)
        else:
            log.info("usage ledger: off (ledger.enabled: false); keys in %s", where)
        log.info(
            "limits: %s",
            "shared through Redis" if self.limiter.kind == "redis" else "in this process",
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            if self.ledger_enabled:
                await self.ledger.close()
            await self.limiter.close()
        finally:
            await self.store.aclose()

    async def _refresh_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.refresh()
            except Exception as e:
                if not failing:
                    log.error(
                        "cannot refresh keys from %s: %s; using the last ones", self.store.where, e
                    )
                failing = True
            else:
                if failing:
                    log.info("keys refreshed from %s again", self.store.where)
                failing = False

    async def refresh(self) -> None:
        records = await self.store.run(self.store.list_keys)
        budgeted = [r for r in records if r.budget is not None and r.revoked_at is None]
        spent: dict[str, float] = {}
        if budgeted:
            now = now_ms()
            starts = {r.id: period_start(r.budget_period or "month", now) for r in budgeted}
            by_day = await self.store.run(self.store.spend_since, min(starts.values()))
            for kid, start in starts.items():
                spent[kid] = sum(c for d, c in by_day.get(kid, {}).items() if d >= start)
        self._install(records)
        self._spent = spent

    def _install(self, records: list[KeyRecord]) -> None:
        infos = [KeyInfo(r) for r in records]
        self.records = records
        self._by_hash = {k.digest: k for k in infos}
        self._by_id = {k.id: k for k in infos}
        was = self.open
        self.open = self.open_setting is True or (
            self.open_setting is None and self._master is None and not records
        )
        if was and not self.open:
            log.warning("auth: a key exists now; requests without a key get 401 from here on")

    # -- who is calling (the HTTP layer calls this before reading the body)

    def authenticate(self, ctx: Caller, token: str | None, proxied: bool = False) -> None:
        """Set the caller's key, or raise 401. `proxied`: the request carries
        X-Forwarded-For or Forwarded, so it came through a reverse proxy."""
        if token is None:
            self._anonymous(proxied, "missing API key: send it as 'Authorization: Bearer <key>'")
            return
        d = digest(token)
        if self._master is not None and hmac.compare_digest(d, self._master):
            ctx.key, ctx.key_id, ctx.app = MASTER, MASTER.id, MASTER.name
            return
        info = self._by_hash.get(d)
        if info is None or not hmac.compare_digest(info.digest, d):
            # SDKs insist on a key and send placeholders ("ollama"): open ignores them.
            self._anonymous(proxied, "invalid API key")
            return
        if info.revoked:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED, f"API key '{info.name}' was revoked", code="invalid_api_key"
            )
        if info.expires_at is not None and time.time() >= info.expires_at:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED, f"API key '{info.name}' has expired", code="invalid_api_key"
            )
        ctx.key, ctx.key_id, ctx.app = info, info.id, info.name

    def _anonymous(self, proxied: bool, refusal: str) -> None:
        """Let a caller without a (known) key in, or raise 401."""
        if not self.open:
            raise GatewayError(ErrorKind.UNAUTHORIZED, refusal, code="invalid_api_key")
        if proxied and self.open_setting is None:
            # Implicit open mode is for local callers; a reverse proxy on this host
            # would hand the whole network a keyless gateway.
            raise GatewayError(
                ErrorKind.UNAUTHORIZED,
                "this gateway has no keys and serves local callers only, and this request "
                "came through a proxy: create a key (aistack keys create), set "
                "auth.master_key, or set auth.open: true to serve it without keys",
                code="invalid_api_key",
            )

    # -- may they use this model now (the service calls this once it knows the model)

    async def admit(self, ctx: Caller, model: str, aliases: Mapping[str, str]) -> None:
        key = ctx.key
        if key is None or not key.restricted:
            return
        if not key.allows(model, aliases):
            raise GatewayError(
                ErrorKind.FORBIDDEN,
                f"API key '{key.name}' may not use model '{model}'",
                param="model",
                code="model_not_allowed",
            )
        if key.budget is not None:
            spent = self._spent.get(key.id, 0.0) + self._unwritten.get(key.id, 0.0)
            if spent >= key.budget:
                end = period_end_ms(key.period, now_ms())
                raise GatewayError(
                    ErrorKind.RATE_LIMITED,
                    f"budget exhausted for API key '{key.name}': ${spent:.4f} of "
                    f"${key.budget:g} per {key.period} spent; it resets at "
                    f"{iso(end)}",
                    code="insufficient_quota",
                    retry_after=max(1.0, end / 1000 - time.time()),
                )
        if not key.limited:
            return
        got = await self.limiter.admit(key.id, key.quota)
        if isinstance(got, Denied):
            raise _denied(key, got)
        ctx.ticket = got

    async def admit_call(self, ctx: Caller) -> None:
        """A request that names no model (a vector operation): the key's rate and
        concurrency limits only; a 429 over them."""
        key = ctx.key
        if key is None or not key.limited:
            return
        got = await self.limiter.admit(key.id, key.quota)
        if isinstance(got, Denied):
            raise _denied(key, got)
        ctx.ticket = got

    def visible(self, ctx: Caller, name: str, aliases: Mapping[str, str]) -> bool:
        key = ctx.key
        return key is None or key.allows(name, aliases)

    # -- what happened (an observer of every finished request)

    def observe(self, ctx: Finished) -> None:
        usage = ctx.usage
        ticket = ctx.ticket
        if ticket is not None:
            self.limiter.done(ticket, usage.total_tokens if usage is not None else 0)
        if ctx.operation is Operation.NONE or not self.ledger_enabled:
            return  # the ledger records model work
        backend = ctx.backend
        upstream = ctx.upstream_model
        cost, source = self.prices.cost(backend, upstream, ctx.model, usage)
        if cost and ctx.key_id:
            self._unwritten[ctx.key_id] = self._unwritten.get(ctx.key_id, 0.0) + cost
        duration_ns = ctx.end_ns - ctx.started_ns
        self.ledger.append(
            UsageRow(
                (time.time_ns() - duration_ns) // 1_000_000,
                ctx.request_id,
                ctx.key_id,
                ctx.app,
                ctx.end_user,
                ctx.dialect,
                ctx.route,
                # A vector operation's "model" is the collection it named, as named.
                _canonical(ctx.model)
                if ctx.model and ctx.operation is not Operation.VECTOR
                else ctx.model,
                backend,
                upstream,
                1 if ctx.stream else 0,
                ctx.status,
                ctx.error,
                usage.prompt_tokens if usage is not None else 0,
                usage.completion_tokens if usage is not None else 0,
                1 if usage is not None and usage.estimated else 0,
                (ctx.first_ns - ctx.started_ns) / 1e6 if ctx.first_ns else None,
                duration_ns / 1e6,
                cost,
                source,
                ctx.attempts,
            )
        )

    def _written(self, rows: Sequence[UsageRow]) -> None:
        """Rows are in the database now: their cost moves from unwritten to committed."""
        for r in rows:
            if r.cost and r.key_id:
                self._unwritten[r.key_id] = self._unwritten.get(r.key_id, 0.0) - r.cost
                info = self._by_id.get(r.key_id)
                if info is not None and info.budget is not None:
                    self._spent[r.key_id] = self._spent.get(r.key_id, 0.0) + r.cost

    # -- keys, for the admin API and the CLI

    async def create_key(self, rec: KeyRecord) -> None:
        await self.store.run(self.store.create_key, rec)
        self._install([*self.records, rec])

    async def revoke_key(self, id_or_name: str) -> list[KeyRecord]:
        done = await self.store.run(self.store.revoke_key, id_or_name)
        if done:
            await self.refresh()
        return done

    def spent(self, key_id: str) -> float:
        return self._spent.get(key_id, 0.0) + self._unwritten.get(key_id, 0.0)

    # -- the admin API's door

    def admin(self, token: str | None, peer: str | None, header: Any) -> Admin | None:
        """The admin (or read-only viewer) behind this request, or None.

        The master key always works. Forward-auth headers (Authentik behind Traefik)
        count only when the TCP peer is a trusted proxy, which must overwrite them; a
        user in `admin_groups` (or anyone, while it is empty) is an admin, one in
        `viewer_groups` a viewer.
        """
        if (
            token is not None
            and self._master is not None
            and hmac.compare_digest(digest(token), self._master)
        ):
            return Admin("master", "master key")
        if self.proxies and peer:
            user = header(b"x-authentik-username")
            if user and _peer_in(peer, self.proxies):
                groups = {
                    g.strip() for g in (header(b"x-authentik-groups") or b"").decode().split("|")
                }
                name = user.decode("utf-8", "replace")
                if not self.admin_groups or self.admin_groups & groups:
                    return Admin(name, "forward auth")
                if self.viewer_groups & groups:
                    return Admin(name, "forward auth", "viewer")
                return None
        return None


_CANONICAL: dict[str, str] = {}


def _canonical(name: str) -> str:
    """canonical(), remembered: a gateway sees a handful of distinct names."""
    c = _CANONICAL.get(name)
    if c is None:
        if len(_CANONICAL) > 4096:
            _CANONICAL.clear()
        c = _CANONICAL[name] = canonical(name)
    return c


def _names(model: str, aliases: Mapping[str, str]) -> list[str]:
    """The canonical name asked for, then what it aliases to (an alias is allowed when
    either the alias or its target matches a key's globs)."""
    out = [canonical(model)]
    for _ in range(8):
        target = aliases.get(out[-1])
        if target is None:
            break
        out.append(canonical(target))
    return out


def _peer_in(peer: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def _denied(key: KeyInfo, d: Denied) -> GatewayError:
    q = key.quota
    what = {
        "rpm": f"{q.rpm} requests per minute",
        "tpm": f"{q.tpm} tokens per minute",
        "concurrent": f"{q.concurrent} concurrent requests",
    }.get(d.limit)
    if what is None:
        return GatewayError(
            ErrorKind.UPSTREAM_ERROR,
            "rate limits are unavailable (Redis is down) and limits.on_redis_error is reject",
            retry_after=d.retry_after,
        )
    return GatewayError(
        ErrorKind.RATE_LIMITED,
        f"rate limit reached for API key '{key.name}': {what}; retry in "
        f"{max(1, round(d.retry_after))} s",
        code="rate_limit_exceeded",
        retry_after=d.retry_after,
    )


def new_record(
    name: str,
    *,
    models: Sequence[str] = (),
    rpm: int | None = None,
    tpm: int | None = None,
    concurrent: int | None = None,
    budget: tuple[float, Period] | None = None,
    expires_at: int | None = None,
) -> tuple[NewKey, KeyRecord]:
    """A fresh key and the record to store (its hash, never the key)."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,64}", name):
        raise ValueError(f"key name {name!r}: use 1-64 letters, digits, '.', '-', '_' or '@'")
    for n, v in (("rpm", rpm), ("tpm", tpm), ("concurrent", concurrent)):
        if v is not None and v <= 0:
            raise ValueError(f"{n} must be a positive number")
    if budget is not None and budget[0] < 0:
        raise ValueError("budget must not be negative")
    key = new_key()
    rec = KeyRecord(
        id=new_key_id(),
        name=name,
        hash=digest(key).hex(),
        hint=hint(key),
        created_at=now_ms(),
        models=tuple(m.strip() for m in models if m.strip()),
        rpm=rpm,
        tpm=tpm,
        concurrent=concurrent,
        budget=budget[0] if budget else None,
        budget_period=budget[1] if budget else None,
        expires_at=expires_at,
    )
    return NewKey(key, rec.id), rec


__all__ = ["MASTER", "Admin", "Gate", "KeyInfo", "StoreError", "new_record"]
