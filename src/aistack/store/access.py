"""The access tables' SQL: the access stamp, console sessions, used sign-in links,
vector sharing grants.

The stamp is one `meta` row that any change to keys, sessions or grants bumps inside
its own transaction (`_changed`): every process sharing the database (replicas,
workers, the CLI's) notices a change by reading that one row (access/gate.py's watch).
A session's id is the SHA-256 of its cookie; a sign-in link's nonce is kept once used,
so a second use finds it. A grant lets an app (a key name's namespace) read another
app's vector collection (vectors/tenancy.py). The same statements on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from aistack.store.calendar import now_ms
from aistack.store.records import SessionRecord
from aistack.store.worker import SqlThread

_STAMP = "access_stamp"
_SESSION_COLUMNS = "id, name, role, via, groups, credential, created_at, expires_at, revoked_at"


class AccessTables(SqlThread):
    """`console_sessions`, `signin_links`, and the access stamp in `meta`."""

    def _changed(self, cur: Any) -> None:
        """Bump the access stamp, inside the caller's transaction."""
        cur.execute(
            self._sql(
                "INSERT INTO meta (name, value) VALUES (?, '1') ON CONFLICT (name) DO UPDATE "
                "SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)"
            ),
            (_STAMP,),
        )

    def access_stamp(self) -> str:
        """Changes whenever a key or a session does, in any process: one row read."""
        rows = self._rows("SELECT value FROM meta WHERE name = ?", (_STAMP,))
        return str(rows[0][0]) if rows else "0"

    def create_session(self, s: SessionRecord) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    f"INSERT INTO console_sessions ({_SESSION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (s.id, s.name, s.role, s.via, "\n".join(s.groups), s.credential,
                 s.created_at, s.expires_at, s.revoked_at),
            )  # fmt: skip

    def session(self, session_id: str) -> SessionRecord | None:
        rows = self._rows(
            f"SELECT {_SESSION_COLUMNS} FROM console_sessions WHERE id = ?", (session_id,)
        )
        if not rows:
            return None
        r = rows[0]
        groups = tuple(g for g in (r[4] or "").split("\n") if g)
        return SessionRecord(r[0], r[1], r[2], r[3], groups, r[5], int(r[6]), int(r[7]), r[8])

    def revoke_session(self, session_id: str, at: int | None = None) -> bool:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE console_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
                ),
                (at if at is not None else now_ms(), session_id),
            )
            done = int(cur.rowcount) > 0
            if done:
                self._changed(cur)
        return done

    def use_link(self, nonce: str, expires_at: int) -> bool:
        """Record a sign-in link as used; False when it already was (anywhere)."""
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO signin_links (nonce, used_at, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (nonce) DO NOTHING"
                ),
                (nonce, now_ms(), expires_at),
            )
            return int(cur.rowcount) == 1

    def vector_grants(self) -> dict[str, list[str]]:
        """Physical collection -> the namespaces that may read it."""
        out: dict[str, list[str]] = {}
        for c, app in self._rows(
            "SELECT collection, app FROM vector_grants ORDER BY collection, app"
        ):
            out.setdefault(str(c), []).append(str(app))
        return out

    def set_vector_grant(self, collection: str, app: str, allow: bool = True) -> bool:
        """Let `app` read `collection` (or no longer); whether anything changed."""
        with self._transaction() as cur:
            if allow:
                cur.execute(
                    self._sql(
                        "INSERT INTO vector_grants (collection, app, created_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (collection, app) DO NOTHING"
                    ),
                    (collection, app, now_ms()),
                )
            else:
                cur.execute(
                    self._sql("DELETE FROM vector_grants WHERE collection = ? AND app = ?"),
                    (collection, app),
                )
            changed = int(cur.rowcount) > 0
            if changed:
                self._changed(cur)
        return changed

    def prune_access(self, now: int | None = None) -> int:
        """Forget sessions and used links past their expiry (they can never count again)."""
        t = now if now is not None else now_ms()
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM console_sessions WHERE expires_at < ?"), (t,))
            n = max(int(cur.rowcount), 0)
            cur.execute(self._sql("DELETE FROM signin_links WHERE expires_at < ?"), (t,))
        return n
