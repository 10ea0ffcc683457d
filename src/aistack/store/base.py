"""The store: keys and the usage ledger, on SQLite or PostgreSQL, through one SQL path.

Both databases are driven through their DB-API drivers (sqlite3, psycopg 3) on one
worker thread per store, so the event loop never waits on a database and the two
share every statement: the differences are the placeholder style and one column type,
handled in `_sql` and the migrations. The gateway only ever calls the store off the
request path (the ledger writer, the key cache refresh, admin requests, the CLI).

Tables (see migrations.py): `api_keys` (hashed keys, their limits and scopes),
`requests` (one row per request, kept `retention_days`), `usage_daily` (per day, key,
model and backend, maintained in the same transaction as the rows it sums, kept for
ever), `console_sessions` and `signin_links` (access.py), and `meta` (small facts: how
far raw rows were pruned, and the access stamp that every key or session change bumps).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aistack.store.access import AccessTables
from aistack.store.calendar import now_ms
from aistack.store.migrations import MIGRATIONS, Migration
from aistack.store.records import KeyRecord, StoreError
from aistack.store.usage import UsageTables

log = logging.getLogger("aistack.store")

_KEY_COLUMNS = (
    "id, name, hash, hint, created_at, models, rpm, tpm, concurrent, budget, budget_period, "
    "expires_at, revoked_at, last_used_at, scopes, images_per_minute"
)


class Store(UsageTables, AccessTables):
    """Keys, the ledger and the schema; subclasses connect and run transactions."""

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
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
                    "\n".join(k.scopes),
                    k.images_per_minute,
                ),
            )
            self._changed(cur)

    def list_keys(self) -> list[KeyRecord]:
        rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [_key(r) for r in rows]

    def key_by_hash(self, hash_hex: str) -> KeyRecord | None:
        """One key by its SHA-256 (a key the gateway has not loaded yet: made elsewhere)."""
        rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash = ?", (hash_hex,))
        return _key(rows[0]) if rows else None

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
            if ids:
                self._changed(cur)
        return [k for k in found if k.id in ids]


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
        scopes=tuple(m for m in (r[14] or "").split("\n") if m),
        images_per_minute=r[15],
    )
