"""The usage ledger's SQL: writing rows with their daily sums, reading them back,
pruning, and usage reports. The same statements on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aistack.store.calendar import day_of, day_start_ms
from aistack.store.records import GROUPS, USAGE_COLUMNS, Report, ReportRow, UsageRow
from aistack.store.worker import YIELD_EVERY, SqlThread, step_aside

_DAILY_SUMS = (
    "requests", "errors", "tokens_in", "tokens_out", "cost", "cost_unknown", "duration_ms",
    "images", "gpu_ms", "partial", "points",
)  # fmt: skip


class UsageTables(SqlThread):
    """`requests` (one row per request) and `usage_daily` (their sums per day)."""

    def write_usage(self, rows: Sequence[UsageRow]) -> None:
        """Append rows, add them to the daily sums and the keys' last use: one transaction."""
        if not rows:
            return
        daily: dict[tuple[str, str, str, str], list[Any]] = {}
        last_used: dict[str, int] = {}
        dated = []
        for i, r in enumerate(rows):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                step_aside()
            day = day_of(r.ts)
            dated.append((day, *r))
            k = (day, r.key_id, r.model, r.backend)
            d = daily.get(k)
            if d is None:
                d = daily[k] = [r.app, 0, 0, 0, 0, 0.0, 0, 0.0, 0, 0.0, 0, 0]
            d[1] += 1
            d[2] += 1 if (r.status >= 400 or r.error) else 0
            d[3] += r.tokens_in
            d[4] += r.tokens_out
            if r.cost is None:
                d[6] += 1
            else:
                d[5] += r.cost
            d[7] += r.duration_ms
            d[8] += r.images
            d[9] += r.gpu_ms
            d[10] += r.partial
            d[11] += r.points
            if r.key_id and r.ts > last_used.get(r.key_id, 0):
                last_used[r.key_id] = r.ts
        cols = ", ".join(("day", *USAGE_COLUMNS))
        marks = ", ".join("?" * (len(USAGE_COLUMNS) + 1))
        sums = ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in _DAILY_SUMS)
        insert = self._sql(f"INSERT INTO requests ({cols}) VALUES ({marks})")
        with self._transaction() as cur:
            for i in range(0, len(dated), YIELD_EVERY):
                if i:
                    step_aside()
                cur.executemany(insert, dated[i : i + YIELD_EVERY])
            cur.executemany(
                self._sql(
                    "INSERT INTO usage_daily (day, key_id, model, backend, app, "
                    f"{', '.join(_DAILY_SUMS)}) VALUES ({', '.join('?' * (5 + len(_DAILY_SUMS)))}) "
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
                    f"SUM(tokens_out), SUM(cost), SUM(cost_unknown), SUM(duration_ms){app}, "
                    "SUM(images), SUM(gpu_ms), SUM(partial), SUM(points) FROM usage_daily "
                    f"WHERE day >= ? AND day < ?{group_by}",
                    (day_of(since_ms), day_of(raw_since)),
                )
            )
        queries.append(
            (
                f"SELECT {select}COUNT(*), "
                "SUM(CASE WHEN status >= 400 OR error <> '' THEN 1 ELSE 0 END), "
                "SUM(tokens_in), SUM(tokens_out), SUM(cost), "
                "SUM(CASE WHEN cost IS NULL THEN 1 ELSE 0 END), SUM(duration_ms)"
                f"{app}, SUM(images), SUM(gpu_ms), SUM(partial), SUM(points) FROM requests "
                f"WHERE ts >= ?{group_by}",
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
                row.images += int(r[n + 8] or 0)
                row.gpu_ms += float(r[n + 9] or 0.0)
                row.partial += int(r[n + 10] or 0)
                row.points += int(r[n + 11] or 0)
        rep.rows = sorted(merged.values(), key=_report_order(by))
        return rep


def _report_order(by: Sequence[str]) -> Callable[[ReportRow], Any]:
    if "day" in by:
        return lambda r: (r.group.get("day", ""), -r.requests)
    return lambda r: (-r.cost, -r.requests, tuple(r.group.values()))
