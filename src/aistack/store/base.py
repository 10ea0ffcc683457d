"""The store: keys and the usage ledger, on SQLite or PostgreSQL, through one SQL path.

Both databases are driven through their DB-API drivers (sqlite3, psycopg 3) on one
worker thread per store, so the event loop never waits on a database and the two
share every statement: the differences are the placeholder style and one column type,
handled in `_sql` and the migrations. The gateway only ever calls the store off the
request path (the ledger writer, the key cache refresh, admin requests, the CLI).

Tables (see migrations.py): `api_keys` (hashed keys and their limits), `requests` (one
row per request, kept `retention_days`), `usage_daily` (per day, key, model and
backend, maintained in the same transaction as the rows it sums, kept for ever), and
`meta` (small facts such as how far raw rows were pruned).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeVar, overload

from aistack.store.migrations import MIGRATIONS, Migration

log = logging.getLogger("aistack.store")

T = TypeVar("T")

# Rows write_usage handles between two offers of the core and the GIL to the event
# loop's thread (os.sched_yield releases both). A ledger batch is ~5 us of CPU a row on
# SQLite, ~2.8 ms for 500; on a core it shares with the loop, the kernel let such a burst
# run on for a while after a request arrived, even at nice 19. Measured at c=1 (p99 of
# the whole round trip, OpenAI -> openai): 1.3-1.5 ms with one insert per batch,
# 0.87-1.01 ms yielding every 16, 32 or 64 rows. Where the loop is not waiting, the
# yield returns at once (~1 us).
_YIELD_EVERY = 32

# How much the store's thread defers to the event loop's (a nice value). Measured at c=1:
# p99 1.5-1.8 ms at 10, 1.2-1.4 ms at 19; at 19 it still kept up with a saturated core
# (7,800 requests/s for 12 s: 103,000 rows written, none dropped, the queue empty), since
# the loop's thread keeps stepping aside (the GIL, waits for I/O). SCHED_IDLE would be
# better still for the tail but starved it (a fifth of the rows dropped).
BACKGROUND_NICE = 19


def _background() -> None:
    """Lower this thread's CPU priority below the event loop's (Linux: per thread).

    Both share the process's cores, and on a busy core the kernel lets a running thread
    finish its slice (milliseconds) before a waking one runs: a ledger batch would then
    delay the requests that arrive meanwhile. At a lower priority the loop's thread
    preempts it sooner (and write_usage steps aside every _YIELD_EVERY rows); the batch
    still runs whenever the loop waits, which is most of the time, and keeps a share of
    a saturated core.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


# Offers the core and the GIL to the event loop's thread (see _YIELD_EVERY); where there
# is no sched_yield (Windows), sleep(0) offers the GIL.
_yield: Callable[[], None] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


Period = Literal["day", "week", "month"]
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

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "concurrent": self.concurrent,
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
        return t


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...


def iso(ms: int | None) -> str | None:
    """ms since the epoch as ISO 8601 in UTC: 2026-11-24T04:32:16Z."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_DAYS: dict[int, str] = {}


def day_of(ms: int) -> str:
    """The UTC date of `ms` as YYYY-MM-DD (memoised: a batch of rows shares a day or two)."""
    n = ms // 86_400_000
    d = _DAYS.get(n)
    if d is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        d = _DAYS[n] = time.strftime("%Y-%m-%d", time.gmtime(n * 86_400))
    return d


def day_start_ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)


def period_start(period: Period, ms: int) -> str:
    """The first UTC day of the budget period containing `ms`."""
    d = datetime.fromtimestamp(ms / 1000, UTC)
    if period == "month":
        d = d.replace(day=1)
    elif period == "week":  # ISO weeks start on Monday
        d = datetime.fromordinal(d.toordinal() - d.weekday()).replace(tzinfo=UTC)
    return d.strftime("%Y-%m-%d")


def period_end_ms(period: Period, ms: int) -> int:
    """When the budget period containing `ms` ends (the next one starts)."""
    start = datetime.strptime(period_start(period, ms), "%Y-%m-%d").replace(tzinfo=UTC)
    if period == "day":
        nxt = datetime.fromordinal(start.toordinal() + 1)
    elif period == "week":
        nxt = datetime.fromordinal(start.toordinal() + 7)
    else:
        nxt = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return int(nxt.replace(tzinfo=UTC).timestamp() * 1000)


_KEY_COLUMNS = (
    "id, name, hash, hint, created_at, models, rpm, tpm, concurrent, budget, budget_period, "
    "expires_at, revoked_at, last_used_at"
)

_DAILY_SUMS = (
    "requests", "errors", "tokens_in", "tokens_out", "cost", "cost_unknown", "duration_ms",
)  # fmt: skip


class Store:
    """The SQL both databases share; subclasses connect and run transactions."""

    kind: str = ""
    placeholder = "?"

    def __init__(self, where: str) -> None:
        self.where = where  # for messages: a path or a URL without its password
        self._conn: Any = None
        self._pool: ThreadPoolExecutor | None = None

    # -- plumbing (subclasses)

    def _connect(self) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _id_column(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def _migration_lock(self, timeout: float) -> Iterator[None]:
        yield

    def _is_disconnect(self, e: BaseException) -> bool:
        return False

    # -- plumbing (shared)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self._sql(sql), params)
        return list(cur.fetchall())

    def close(self) -> None:
        """Close from a thread that is not the store's own (the CLI, tests)."""
        self._reset()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def aclose(self) -> None:
        """Close from the event loop: the connection on its own thread, then the thread."""
        if self._pool is not None:
            await self.run(self._reset)
            self._pool.shutdown(wait=False)
            self._pool = None
        else:
            self._reset()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a store method on the store's own thread (one, so calls never overlap)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                1, thread_name_prefix=f"aistack-{self.kind}", initializer=_background
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._retrying, fn, args)

    def _retrying(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except Exception as e:
            if not self._is_disconnect(e):
                raise
            # The server restarted or dropped us: one fresh connection, one more try.
            self._reset()
            return fn(*args)

    # -- schema

    def _has_table(self, name: str) -> bool:
        raise NotImplementedError

    def version(self) -> int:
        """The schema version in the database; 0 for a blank one. Reads only."""
        if not self._has_table("schema_migrations"):
            return 0
        return int(self._rows("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])

    @staticmethod
    def latest() -> int:
        return MIGRATIONS[-1].version

    def pending(self) -> list[Migration]:
        have = self.version()
        return [m for m in MIGRATIONS if m.version > have]

    def migrate(self, lock_timeout: float = 30.0) -> list[Migration]:
        """Apply the migrations this database lacks, each in its own transaction."""
        applied: list[Migration] = []
        with self._migration_lock(lock_timeout):
            with self._transaction() as cur:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                )
            for m in self.pending():
                with self._transaction() as cur:
                    for stmt in m.statements(self._id_column()):
                        cur.execute(stmt)
                    cur.execute(
                        self._sql(
                            "INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES (?, ?, ?)"
                        ),
                        (m.version, m.name, now_ms()),
                    )
                log.info("database %s: applied migration %d %s", self.where, m.version, m.name)
                applied.append(m)
        return applied

    def check_schema(self) -> None:
        """Raise unless the schema has every migration this version needs."""
        have, need = self.version(), self.latest()
        if have < need:
            raise StoreError(
                f"database {self.where} is at schema version {have}, this aistack needs "
                f"{need}: run `aistack db upgrade` (once, from one place)"
            )
        if have > need:
            # Migrations only ever add, so an older replica keeps working during an upgrade.
            log.warning(
                "database %s is at schema version %d, newer than this aistack (%d)",
                self.where,
                have,
                need,
            )

    # -- keys

    def create_key(self, k: KeyRecord) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    f"INSERT INTO api_keys ({_KEY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    k.id,
                    k.name,
                    k.hash,
                    k.hint,
                    k.created_at,
                    "\n".join(k.models),
                    k.rpm,
                    k.tpm,
                    k.concurrent,
                    k.budget,
                    k.budget_period,
                    k.expires_at,
                    k.revoked_at,
                    k.last_used_at,
                ),
            )

    def list_keys(self) -> list[KeyRecord]:
        rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [_key(r) for r in rows]

    def key_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM api_keys")[0][0])

    def revoke_key(self, id_or_name: str, at: int | None = None) -> list[KeyRecord]:
        """Revoke the key with this id, or every live key with this name; return them."""
        at = at if at is not None else now_ms()
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE (id = ? OR name = ?) "
                    "AND revoked_at IS NULL"
                ),
                (id_or_name, id_or_name),
            )
            found = [_key(r) for r in cur.fetchall()]
            ids = [k.id for k in found if k.id == id_or_name] or [k.id for k in found]
            for kid in ids:
                cur.execute(self._sql("UPDATE api_keys SET revoked_at = ? WHERE id = ?"), (at, kid))
        return [k for k in found if k.id in ids]

    # -- the ledger

    def write_usage(self, rows: Sequence[UsageRow]) -> None:
        """Append rows, add them to the daily sums and the keys' last use: one transaction."""
        if not rows:
            return
        daily: dict[tuple[str, str, str, str], list[Any]] = {}
        last_used: dict[str, int] = {}
        dated = []
        for i, r in enumerate(rows):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                _yield()
            day = day_of(r.ts)
            dated.append((day, *r))
            k = (day, r.key_id, r.model, r.backend)
            d = daily.get(k)
            if d is None:
                d = daily[k] = [r.app, 0, 0, 0, 0, 0.0, 0, 0.0]
            d[1] += 1
            d[2] += 1 if (r.status >= 400 or r.error) else 0
            d[3] += r.tokens_in
            d[4] += r.tokens_out
            if r.cost is None:
                d[6] += 1
            else:
                d[5] += r.cost
            d[7] += r.duration_ms
            if r.key_id and r.ts > last_used.get(r.key_id, 0):
                last_used[r.key_id] = r.ts
        cols = ", ".join(("day", *USAGE_COLUMNS))
        marks = ", ".join("?" * (len(USAGE_COLUMNS) + 1))
        sums = ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in _DAILY_SUMS)
        insert = self._sql(f"INSERT INTO requests ({cols}) VALUES ({marks})")
        with self._transaction() as cur:
            for i in range(0, len(dated), _YIELD_EVERY):
                if i:
                    _yield()
                cur.executemany(insert, dated[i : i + _YIELD_EVERY])
            cur.executemany(
                self._sql(
                    "INSERT INTO usage_daily (day, key_id, model, backend, app, "
                    f"{', '.join(_DAILY_SUMS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (day, key_id, model, backend) DO UPDATE SET "
                    f"app = excluded.app, {sums}"
                ),
                [(*k, *v) for k, v in daily.items()],
            )
            cur.executemany(
                self._sql(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
                    "AND (last_used_at IS NULL OR last_used_at < ?)"
                ),
                [(ts, kid, ts) for kid, ts in last_used.items()],
            )

    def spend_since(self, day: str) -> dict[str, dict[str, float]]:
        """Known cost per key and UTC day, from `day` on (budgets read this)."""
        out: dict[str, dict[str, float]] = {}
        for key_id, d, cost in self._rows(
            "SELECT key_id, day, SUM(cost) FROM usage_daily WHERE day >= ? AND key_id <> '' "
            "GROUP BY key_id, day",
            (day,),
        ):
            out.setdefault(key_id, {})[d] = float(cost or 0.0)
        return out

    def requests(
        self,
        *,
        limit: int = 100,
        before_ms: int | None = None,
        key_id: str | None = None,
        app: str | None = None,
        model: str | None = None,
        backend: str | None = None,
        errors: bool = False,
    ) -> list[UsageRow]:
        """The newest rows first (the console's request log), optionally filtered."""
        where = ["ts < ?"]
        params: list[Any] = [before_ms if before_ms is not None else 2**62]
        for column, value in (("key_id", key_id), ("app", app), ("model", model),
                              ("backend", backend)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if errors:
            where.append("(status >= 400 OR error <> '')")
        rows = self._rows(
            f"SELECT {', '.join(USAGE_COLUMNS)} FROM requests WHERE {' AND '.join(where)} "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [UsageRow(*r) for r in rows]

    def latency_samples(self, since_ms: int, limit: int = 50_000) -> list[tuple[Any, ...]]:
        """(ts, model, backend, duration_ms, ttft_ms) of the newest answered requests
        since `since_ms`: what latency percentiles are computed from."""
        return self._rows(
            "SELECT ts, model, backend, duration_ms, ttft_ms FROM requests "
            "WHERE ts >= ? AND status < 400 AND error = '' AND backend <> '' "
            "ORDER BY ts DESC LIMIT ?",
            (since_ms, limit),
        )

    def count_requests(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM requests")[0][0])

    def raw_since(self) -> int:
        """Rows before this (ms, a UTC midnight) were pruned; 0 if none ever were."""
        rows = self._rows("SELECT value FROM meta WHERE name = 'raw_since'")
        return int(rows[0][0]) if rows else 0

    def prune(self, before_ms: int, chunk: int = 5000) -> int:
        """Delete raw rows before the UTC midnight at or before `before_ms`, in chunks.

        Their sums live on in `usage_daily`. Small transactions keep the table usable
        while a large backlog is deleted (one big DELETE is what chokes other gateways).
        """
        cutoff = day_start_ms(day_of(before_ms))
        total = 0
        while True:
            with self._transaction() as cur:
                cur.execute(
                    self._sql(
                        "DELETE FROM requests WHERE id IN "
                        "(SELECT id FROM requests WHERE ts < ? ORDER BY id LIMIT ?)"
                    ),
                    (cutoff, chunk),
                )
                n = int(cur.rowcount)
            total += max(n, 0)
            if n < chunk:
                break
        if cutoff > self.raw_since():
            with self._transaction() as cur:
                cur.execute(self._sql("DELETE FROM meta WHERE name = 'raw_since'"))
                cur.execute(
                    self._sql("INSERT INTO meta (name, value) VALUES ('raw_since', ?)"),
                    (str(cutoff),),
                )
        return total

    # -- reports

    def report(self, by: Sequence[str], since_ms: int) -> Report:
        """Sums grouped by any of key, model, backend, day, since `since_ms`.

        Raw rows answer exactly; the part of the range older than the raw rows kept
        comes from the daily sums (whole UTC days).
        """
        for b in by:
            if b not in GROUPS:
                raise ValueError(f"cannot group by {b!r}: choose from {', '.join(GROUPS)}")
        rep = Report(tuple(by), since_ms)
        merged: dict[tuple[str, ...], ReportRow] = {}
        raw_since = self.raw_since()
        cols = {"key": "key_id", "model": "model", "backend": "backend", "day": "day"}
        group_cols = [cols[b] for b in by]
        select = ", ".join(group_cols) + (", " if group_cols else "")
        group_by = f" GROUP BY {', '.join(group_cols)}" if group_cols else ""
        app = ", MAX(app)"
        queries: list[tuple[str, tuple[Any, ...]]] = []
        if since_ms < raw_since:
            rep.rolled_up = True
            queries.append(
                (
                    f"SELECT {select}SUM(requests), SUM(errors), SUM(tokens_in), "
                    f"SUM(tokens_out), SUM(cost), SUM(cost_unknown), SUM(duration_ms){app} "
                    f"FROM usage_daily WHERE day >= ? AND day < ?{group_by}",
                    (day_of(since_ms), day_of(raw_since)),
                )
            )
        queries.append(
            (
                f"SELECT {select}COUNT(*), "
                "SUM(CASE WHEN status >= 400 OR error <> '' THEN 1 ELSE 0 END), "
                "SUM(tokens_in), SUM(tokens_out), SUM(cost), "
                "SUM(CASE WHEN cost IS NULL THEN 1 ELSE 0 END), SUM(duration_ms)"
                f"{app} FROM requests WHERE ts >= ?{group_by}",
                (max(since_ms, raw_since),),
            )
        )
        n = len(group_cols)
        for sql, params in queries:
            for r in self._rows(sql, params):
                if not r[n]:
                    continue  # no rows at all (an aggregate without GROUP BY)
                gk = tuple(str(v) for v in r[:n])
                row = merged.get(gk)
                if row is None:
                    group = dict(zip(by, gk, strict=True))
                    if "key" in group:
                        group["app"] = str(r[n + 7] or "")
                    row = merged[gk] = ReportRow(group=group)
                row.requests += int(r[n])
                row.errors += int(r[n + 1] or 0)
                row.tokens_in += int(r[n + 2] or 0)
                row.tokens_out += int(r[n + 3] or 0)
                row.cost += float(r[n + 4] or 0.0)
                row.cost_unknown += int(r[n + 5] or 0)
                row.duration_ms += float(r[n + 6] or 0.0)
        rep.rows = sorted(merged.values(), key=_report_order(by))
        return rep


def _report_order(by: Sequence[str]) -> Callable[[ReportRow], Any]:
    if "day" in by:
        return lambda r: (r.group.get("day", ""), -r.requests)
    return lambda r: (-r.cost, -r.requests, tuple(r.group.values()))


def _key(r: Sequence[Any]) -> KeyRecord:
    return KeyRecord(
        id=r[0],
        name=r[1],
        hash=r[2],
        hint=r[3],
        created_at=int(r[4]),
        models=tuple(m for m in (r[5] or "").split("\n") if m),
        rpm=r[6],
        tpm=r[7],
        concurrent=r[8],
        budget=float(r[9]) if r[9] is not None else None,
        budget_period=r[10],
        expires_at=r[11],
        revoked_at=r[12],
        last_used_at=r[13],
    )
