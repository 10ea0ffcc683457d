"""Console sessions: a random token in an HttpOnly, SameSite=Strict cookie, kept in the store.

The cookie is 256 random bits and means nothing by itself; the store keeps its SHA-256
with who signed in, how (master key, admin key, sign-in link, forward auth), the
groups a proxy named and a fingerprint of the credential used. So every replica and
worker that shares the database accepts the same sessions, and a sign-out (which
bumps the store's access stamp) holds on all of them within `auth.watch` seconds; on
the replica that signed out, at once.

Each process keeps the sessions it has seen in memory (and the tokens it found
nothing for, a bounded negative cache), dropped whenever the access stamp changes.
What a session may do is decided again on every request, against the current rules
(the gate's `session_admin`): a session outlives neither the credential that made it
nor the forward-auth rule that let its user in.

State-changing calls also need the session's CSRF token (derived from the cookie, put
in the page, sent back in a header or a form field), so a page on another site cannot
act with a signed-in browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aistack.store import SessionRecord, Store
from aistack.store.calendar import now_ms

COOKIE = "aistack_console"
CSRF_HEADER = b"x-aistack-csrf"
_CSRF = b"aistack console csrf v1\0"
_NEGATIVE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # the SHA-256 of the cookie
    name: str
    role: str  # "admin" | "viewer"
    via: str  # "master key" | "admin key" | "sign-in link" | "forward auth"
    groups: tuple[str, ...]
    credential: str  # fingerprint of the credential that signed it in ("" for forward auth)
    expires: float  # unix seconds
    csrf: str


class Unknown:
    """This process has not seen that cookie: ask the store."""


UNKNOWN = Unknown()


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("latin-1", "replace")).hexdigest()


def csrf_of(token: str) -> str:
    return hashlib.sha256(_CSRF + token.encode("latin-1", "replace")).hexdigest()[:40]


def _session(rec: SessionRecord, token: str) -> Session:
    return Session(
        rec.id, rec.name, rec.role, rec.via, rec.groups, rec.credential,
        rec.expires_at / 1000, csrf_of(token),
    )  # fmt: skip


class Sessions:
    """The console's sessions, in the store, with a per-process cache."""

    def __init__(self, store: Store, ttl_seconds: float) -> None:
        self.store = store
        self.ttl = int(ttl_seconds)
        self._live: dict[str, Session] = {}
        self._none: set[str] = set()

    def cached(self, token: str) -> Session | Unknown | None:
        """The session for a cookie if this process knows the answer: a Session, None
        (no such session, or over), or UNKNOWN (ask the store: `get`)."""
        sid = session_id(token)
        s = self._live.get(sid)
        if s is not None:
            return s if s.expires > time.time() else None
        return None if sid in self._none else UNKNOWN

    async def get(self, token: str) -> Session | None:
        """The live session for a cookie, asking the store when this process has not
        seen it (made on another replica)."""
        got = self.cached(token)
        if not isinstance(got, Unknown):
            return got
        sid = session_id(token)
        rec = await self.store.run(self.store.session, sid)
        if rec is None or rec.revoked_at is not None or rec.expires_at <= now_ms():
            if len(self._none) >= _NEGATIVE_MAX:
                self._none.clear()
            self._none.add(sid)
            return None
        s = self._live[sid] = _session(rec, token)
        return s

    async def issue(
        self,
        name: str,
        role: str,
        via: str,
        *,
        groups: Sequence[str] = (),
        credential: str = "",
    ) -> tuple[str, Session]:
        """A new session, stored; its cookie value (shown to nobody but the browser)."""
        token = secrets.token_urlsafe(32)
        now = now_ms()
        rec = SessionRecord(
            session_id(token), name[:200], role, via, tuple(groups), credential,
            now, now + self.ttl * 1000,
        )  # fmt: skip
        await self.store.run(self.store.create_session, rec)
        s = self._live[rec.id] = _session(rec, token)
        return token, s

    async def revoke(self, s: Session) -> None:
        """Sign out: at once here, within `auth.watch` seconds everywhere else."""
        self._live.pop(s.id, None)
        self._none.add(s.id)
        await self.store.run(self.store.revoke_session, s.id)

    def forget(self) -> None:
        """Something changed in the store (a sign-out elsewhere): ask it again."""
        self._live.clear()
        self._none.clear()

    @staticmethod
    def check_csrf(s: Session, given: bytes | str | None) -> bool:
        if given is None:
            return False
        g = given.decode("latin-1") if isinstance(given, bytes) else given
        return hmac.compare_digest(g.encode("latin-1", "replace"), s.csrf.encode())


def cookie_value(header: bytes | None) -> str | None:
    """Our cookie's value from a Cookie header."""
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == COOKIE:
            return v.strip() or None
    return None


def set_cookie(token: str, max_age: int, secure: bool) -> bytes:
    attrs = f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return (attrs + ("; Secure" if secure else "")).encode()


def clear_cookie(secure: bool) -> bytes:
    attrs = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return (attrs + ("; Secure" if secure else "")).encode()
