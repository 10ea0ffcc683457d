"""The gate every request passes: who is calling, may they use this model now, what it cost.

On the request path everything here is in memory: a SHA-256 of the presented key, a
dict lookup, a constant-time compare, a few float operations for the limits (or one
Redis round trip when `redis_url` is set), and after the answer a tuple appended to
the ledger's queue.

Keys take effect at once, everywhere. A key this process has not loaded (made by the
CLI or another replica a moment ago) is looked up in the store by its hash, once,
and kept; keys nobody has are remembered for a minute (a bounded negative cache), so
an SDK's placeholder ("ollama") costs one lookup. Every process polls the store's
access stamp every `auth.watch` seconds (0.5), one indexed row, which changes in the
transaction of any key or session change: a revocation anywhere (another replica, a
worker, the CLI) reloads the keys and drops the cached sessions here within that
time. Budgets' spend is reloaded every `auth.refresh` seconds.

Auth modes:
- open: no master key and no virtual key yet (or `auth.open: true`): requests need no
  key. Implicitly open serves local callers only (http/auth.py: a loopback peer that
  named a loopback host and sent no proxy header). A key that is presented and known
  is still honoured (its limits, its name in the ledger); one that is unknown is
  ignored, since SDKs insist on sending something ("ollama", "none"). A known key
  revoked or expired is refused.
- keys: every model request needs the master key, the admin credential or a live
  virtual key; 401 otherwise.

The admin credential (access/credential.py) always exists: a configured master key, or
the one `aistack serve` made in the data directory. The generated one grants what the
master key grants but does not close an open gateway.

Failed credentials are throttled per client address (`FAILURES`): past the burst, every
attempt from that address gets 429 until it has waited, so a master key cannot be
guessed at line rate.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aistack.access import scopes
from aistack.access.credential import Credential, configured
from aistack.access.keys import NewKey, digest, hint, new_key, new_key_id
from aistack.access.ledger import Ledger
from aistack.access.pricing import Prices
from aistack.access.sessions import Session, Sessions
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
        "period", "quota", "restricted", "revoked", "scopes",
    )  # fmt: skip

    def __init__(self, rec: KeyRecord | None, *, id: str = "", name: str = "") -> None:
        self.id = rec.id if rec else id
        # What routes with a `scope` it may call: the defaults and its own; an admin
        # (no record) every one.
        self.scopes = scopes.held(rec.scopes) if rec else scopes.ALL
        self.name = rec.name if rec else name
        self.digest = bytes.fromhex(rec.hash) if rec else b""
        self.revoked = bool(rec and rec.revoked_at is not None)
        self.expires_at = rec.expires_at / 1000 if rec and rec.expires_at else None
        self.quota = (
            Quota(rec.rpm, rec.tpm, rec.concurrent, rec.images_per_minute) if rec else Quota()
        )
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

    def usable(self) -> bool:
        """Neither revoked nor expired."""
        return not self.revoked and (self.expires_at is None or time.time() < self.expires_at)

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
ADMIN_KEY = KeyInfo(None, id="admin", name="admin")

# Failed credentials per client address, a minute: GCRA, so a burst of FAILURES, then
# one more every 60/FAILURES s; past that, 429 until the address has waited.
FAILURES = 10
_FAILURE_WINDOW = 60.0
_NEGATIVE_TTL = 60.0
_NEGATIVE_MAX = 4096


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
    partial: bool
    ticket: Ticket | None
    deferred: bool
    images: int
    gpu_ms: float
    points: int

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
    via: str  # "master key" | "admin key" | "forward auth" | "session"
    role: str = "admin"  # "admin" | "viewer" (reads, never changes)
    groups: tuple[str, ...] = ()  # forward auth: the groups the proxy named

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
        admin_key: Credential | None = None,
        open_mode: bool | None = None,
        trusted_proxies: Sequence[str] = (),
        admin_groups: Sequence[str] = (),
        viewer_groups: Sequence[str] = (),
        refresh: float = 5.0,
        watch: float = 0.5,
        session_hours: float = 12.0,
        ledger: Mapping[str, Any] | None = None,
        migrate: bool = True,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.prices = prices
        self._master = digest(master_key) if master_key else None
        # The admin credentials, in the order sign-in links are checked against them.
        self.credentials: list[Credential] = [
            c for c in (configured(master_key), admin_key) if c is not None
        ]
        self._credentials = [(digest(c.secret), c) for c in self.credentials]
        self.open_setting = open_mode
        self.proxies = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        self.admin_groups = {g.strip() for g in admin_groups if g.strip()}
        self.viewer_groups = {g.strip() for g in viewer_groups if g.strip()}
        self.refresh_every = refresh
        self.watch_every = watch
        self.migrate = migrate
        self.sessions = Sessions(store, session_hours * 3600)
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
        self._tasks: list[asyncio.Task[None]] = []
        # Keys nobody has (digest -> until, monotonic), and lookups under way.
        self._unknown: dict[bytes, float] = {}
        self._looking: dict[bytes, asyncio.Future[KeyInfo | None]] = {}
        self._stamp = ""
        # Called after the access stamp moved (a key, session or grant changed in some
        # process sharing the store), once the keys are reloaded: rooms reload theirs.
        self.on_access_change: list[Callable[[], Awaitable[None]]] = []
        # Failed credentials per client: GCRA's theoretical arrival time (monotonic).
        self._failures: dict[str, float] = {}

    @property
    def has_master(self) -> bool:
        """A configured master key (which, unlike the generated admin key, closes an
        open gateway)."""
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
        self._stamp = await st.run(st.access_stamp)
        await self.refresh()
        await self.limiter.start()
        if self.ledger_enabled:
            await self.ledger.start()
        self._say_how()
        self._tasks = [
            asyncio.create_task(self._refresh_loop(), name="aistack-keys-refresh"),
            asyncio.create_task(self._watch_loop(), name="aistack-access-watch"),
        ]

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
            {"redis": "shared through Redis", "shared": "shared by this host's workers"}.get(
                self.limiter.kind, "in this process"
            ),
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            if self.ledger_enabled:
                await self.ledger.close()
            await self.limiter.close()
        finally:
            await self.store.aclose()

    async def flush(self) -> None:
        """Write the ledger's queued rows now (shutdown: before the backends close)."""
        if not self.ledger_enabled:
            return
        for _ in range(3):  # requests cancelled just now finish on the next loop turns
            await asyncio.sleep(0)
        try:
            await self.ledger.flush()
        except Exception:
            log.exception("usage ledger: flush failed; retried at close")

    async def _refresh_loop(self) -> None:
        failing = False
        ticks = 0
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.refresh()
                ticks += 1
                if ticks % max(1, round(3600 / self.refresh_every)) == 1:
                    await self.store.run(self.store.prune_access)
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

    async def _watch_loop(self) -> None:
        """Notice a key or session change made by any process sharing the store."""
        while True:
            await asyncio.sleep(self.watch_every)
            try:
                stamp = await self.store.run(self.store.access_stamp)
                if stamp != self._stamp:
                    self._stamp = stamp
                    self.sessions.forget()
                    self._install(await self.store.run(self.store.list_keys))
                    for reload in self.on_access_change:
                        await reload()
            except Exception as e:  # the refresh loop says when the store is failing
                log.debug("access watch: %s", e)

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
        self._unknown.clear()
        was = self.open
        self.open = self.open_setting is True or (
            self.open_setting is None and self._master is None and not records
        )
        if was and not self.open:
            log.warning("auth: a key exists now; requests without a key get 401 from here on")

    # -- who is calling (the HTTP layer calls these before reading the body)

    def known(self, token: str) -> tuple[bytes, KeyInfo | None]:
        """The presented key's digest, and the key if this process knows it (the master
        key, the admin key, a loaded virtual key): the request path's whole check."""
        d = digest(token)
        info = self._by_hash.get(d)
        if info is not None and hmac.compare_digest(info.digest, d):
            return d, info
        for cd, c in self._credentials:
            if hmac.compare_digest(d, cd):
                return d, ADMIN_KEY if c.generated else MASTER
        return d, None

    async def lookup(self, d: bytes) -> KeyInfo | None:
        """A key this process has not loaded, from the store (made elsewhere a moment
        ago); None when nobody has it. One lookup per digest at a time."""
        info = self._by_hash.get(d)
        if info is not None:
            return info
        until = self._unknown.get(d)
        if until is not None and until > time.monotonic():
            return None
        fut = self._looking.get(d)
        if fut is None:
            fut = self._looking[d] = asyncio.ensure_future(self._fetch(d))
            fut.add_done_callback(lambda _: self._looking.pop(d, None))
        return await asyncio.shield(fut)

    async def _fetch(self, d: bytes) -> KeyInfo | None:
        try:
            rec = await self.store.run(self.store.key_by_hash, d.hex())
        except Exception as e:
            log.warning("cannot look a key up in %s: %s", self.store.where, e)
            return None
        if rec is None:
            if len(self._unknown) >= _NEGATIVE_MAX:
                self._unknown.clear()
            self._unknown[d] = time.monotonic() + _NEGATIVE_TTL
            return None
        if rec.id not in self._by_id:
            self._install([*self.records, rec])
        return self._by_hash.get(d)

    def accept(self, ctx: Caller, info: KeyInfo) -> None:
        """Let a known key in, or raise 401 (revoked, expired)."""
        if info.revoked:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED, f"API key '{info.name}' was revoked", code="invalid_api_key"
            )
        if info.expires_at is not None and time.time() >= info.expires_at:
            raise GatewayError(
                ErrorKind.UNAUTHORIZED, f"API key '{info.name}' has expired", code="invalid_api_key"
            )
        ctx.key, ctx.key_id, ctx.app = info, info.id, info.name

    # -- failed credentials, per client address

    @property
    def throttling(self) -> bool:
        """Some address has failed lately: the admin credentials are checked only after
        its throttle (a guess that is right must wait like the wrong ones)."""
        return bool(self._failures)

    def throttled(self, client: str) -> GatewayError | None:
        """A 429 while `client` is over its failures, else None."""
        tat = self._failures.get(client)
        if tat is None:
            return None
        if tat <= time.monotonic():
            del self._failures[client]  # all earned back
            return None
        # FAILURES failures in a row leave tat a whole window ahead: the next waits for
        # one failure's worth of it to pass.
        wait = tat - time.monotonic() - (_FAILURE_WINDOW - _FAILURE_WINDOW / FAILURES)
        if wait <= 0:
            return None
        return GatewayError(
            ErrorKind.RATE_LIMITED,
            f"too many failed sign-in attempts from this address: retry in {max(1, round(wait))} s",
            code="rate_limit_exceeded",
            retry_after=wait,
        )

    def failed(self, client: str) -> None:
        """A credential from `client` was wrong (GCRA: FAILURES a minute, in a burst)."""
        now = time.monotonic()
        if len(self._failures) > 10_000:
            self._failures = {
                k: v for k, v in self._failures.items() if v > now + _FAILURE_WINDOW - 1
            }
        tat = max(self._failures.get(client, 0.0), now) + _FAILURE_WINDOW / FAILURES
        self._failures[client] = min(tat, now + 2 * _FAILURE_WINDOW)

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

    async def admit_images(self, ctx: Caller, n: int) -> None:
        """An image request for `n` images: within the key's images per minute, or a 429
        (a 400 when one request asks for more than a minute's worth)."""
        key = ctx.key
        per = key.quota.ipm if key is not None else None
        if key is None or not per:
            return
        if n > per:
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"API key '{key.name}' may make {per} images a minute; this request asks for {n}",
                param="n",
            )
        got = await self.limiter.admit_images(key.id, per, n)
        if got is not None:
            raise _denied(key, got)

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
        if ctx.operation is Operation.NONE or ctx.deferred or not self.ledger_enabled:
            return  # the ledger records model work (an image job's row: when it ends)
        backend = ctx.backend
        upstream = ctx.upstream_model
        cost, source = self.prices.cost(backend, upstream, ctx.model, usage, ctx.images,
                                        ctx.gpu_ms)  # fmt: skip
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
                ctx.images,
                ctx.gpu_ms,
                1 if ctx.partial else 0,
                ctx.points,
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

    def credential_of(self, token: str | None) -> Credential | None:
        """The admin credential a presented key is, if it is one."""
        if not token:
            return None
        d = digest(token)
        for cd, c in self._credentials:
            if hmac.compare_digest(d, cd):
                return c
        return None

    def admin_by_key(self, token: str | None) -> Admin | None:
        """The admin a presented key stands for: the master key or the admin key."""
        c = self.credential_of(token)
        if c is None:
            return None
        return Admin("admin", "admin key") if c.generated else Admin("master", "master key")

    def forwarded(self, peer: str | None, header: Any) -> Admin | None:
        """The user a trusted proxy vouches for (Authentik behind Traefik), or None.

        Forward-auth headers count only when the TCP peer is a trusted proxy, which must
        overwrite them; a user in `admin_groups` (or anyone, while it is empty) is an
        admin, one in `viewer_groups` a viewer, anyone else nobody.
        """
        if not self.proxies or not peer:
            return None
        user = header(b"x-authentik-username")
        if not user or not _peer_in(peer, self.proxies):
            return None
        raw = (header(b"x-authentik-groups") or b"").decode("utf-8", "replace")
        groups = tuple(g for g in (x.strip() for x in raw.split("|")) if g)
        role = self.role_of(groups)
        if role is None:
            return None
        return Admin(user.decode("utf-8", "replace")[:200], "forward auth", role, groups)

    def trusts(self, peer: str) -> bool:
        """The TCP peer is one of `auth.trusted_proxies`."""
        return _peer_in(peer, self.proxies)

    def role_of(self, groups: Sequence[str]) -> str | None:
        """A forward-auth user's role under the current rules."""
        g = set(groups)
        if not self.admin_groups or self.admin_groups & g:
            return "admin"
        if self.viewer_groups & g:
            return "viewer"
        return None

    def admin(self, token: str | None, peer: str | None, header: Any) -> Admin | None:
        """The admin (or read-only viewer) behind this request, or None: the master key
        or admin key presented, else forward auth."""
        return self.admin_by_key(token) or self.forwarded(peer, header)

    def session_admin(self, s: Session, fwd: Admin | None) -> Admin | None:
        """What a console session may do now, under the current rules (every request):
        a session signed in by a credential lives only while that credential is the
        gateway's; a forward-auth session only while forward auth would still let its
        user in with that role, and never as someone else the proxy names now."""
        if s.via == "forward auth":
            if not self.proxies or self.role_of(s.groups) != s.role:
                return None
            if fwd is not None and (fwd.name, fwd.role) != (s.name, s.role):
                return None
        elif not any(c.fingerprint == s.credential for c in self.credentials):
            return None
        return Admin(s.name, "session", s.role, s.groups)


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
        "ipm": f"{q.ipm} images per minute",
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


# The largest rpm, tpm, concurrent or images_per_minute a key may have.
MAX_LIMIT = 2**31 - 1


def new_record(
    name: str,
    *,
    models: Sequence[str] = (),
    key_scopes: Sequence[str] = (),
    rpm: int | None = None,
    tpm: int | None = None,
    concurrent: int | None = None,
    budget: tuple[float, Period] | None = None,
    expires_at: int | None = None,
    images_per_minute: int | None = None,
) -> tuple[NewKey, KeyRecord]:
    """A fresh key and the record to store (its hash, never the key)."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,64}", name):
        raise ValueError(f"key name {name!r}: use 1-64 letters, digits, '.', '-', '_' or '@'")
    for n, v in (("rpm", rpm), ("tpm", tpm), ("concurrent", concurrent),
                 ("images_per_minute", images_per_minute)):  # fmt: skip
        if v is not None and v <= 0:
            raise ValueError(f"{n} must be a positive number")
        # The columns are INTEGER, 32 bits on PostgreSQL: a larger limit is a 400 here,
        # not a failed INSERT (a 500) there, or on SQLite beyond 64 bits.
        if v is not None and v > MAX_LIMIT:
            raise ValueError(f"{n} must be at most {MAX_LIMIT}")
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
        scopes=scopes.parse(key_scopes),
        images_per_minute=images_per_minute,
    )
    return NewKey(key, rec.id), rec


__all__ = ["ADMIN_KEY", "MASTER", "Admin", "Gate", "KeyInfo", "StoreError", "new_record"]
