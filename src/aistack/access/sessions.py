"""Console sessions: a signed, expiring token in an HttpOnly, SameSite=Strict cookie.

The cookie holds who signed in, their role and an expiry, signed with HMAC-SHA256; never
the master key. State-changing calls also need the session's CSRF token (derived from
the session, sent by the console in a header), so a page on another site cannot act with
a signed-in browser. Signing out revokes the session id on this replica until it
expires; the signing secret (console.session_secret, or one derived from the master
key) makes sessions valid on every replica that shares it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

import orjson

COOKIE = "aistack_console"
CSRF_HEADER = b"x-aistack-csrf"
_DERIVE = b"aistack console sessions v1"


def secret_for(session_secret: str | None, master_key: str | None) -> bytes:
    """The signing key: configured, else derived from the master key, else random."""
    if session_secret:
        return hashlib.sha256(_DERIVE + b"\0" + session_secret.encode()).digest()
    if master_key:
        return hmac.new(master_key.encode(), _DERIVE, hashlib.sha256).digest()
    return os.urandom(32)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    name: str
    role: str  # "admin" | "viewer"
    via: str  # how they signed in: "master key" | "forward auth" | "local"
    expires: int  # unix seconds
    csrf: str


class Sessions:
    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        self._secret = secret
        self.ttl = int(ttl_seconds)
        self._revoked: dict[str, int] = {}  # sid -> expiry

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def _csrf(self, sid: str) -> str:
        return self._sign(b"csrf\0" + sid.encode()).hex()[:40]

    def issue(
        self, name: str, role: str, via: str, now: float | None = None
    ) -> tuple[str, Session]:
        """A new session and its cookie value."""
        sid = _b64(os.urandom(12))
        exp = int((now if now is not None else time.time()) + self.ttl)
        payload = orjson.dumps({"sid": sid, "sub": name, "role": role, "via": via, "exp": exp})
        body = _b64(payload)
        token = f"v1.{body}.{_b64(self._sign(body.encode()))}"
        return token, Session(sid, name, role, via, exp, self._csrf(sid))

    def verify(self, token: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or None (forged, expired, revoked)."""
        if not token or token.count(".") != 2:
            return None
        version, body, sig = token.split(".")
        if version != "v1":
            return None
        try:
            good = hmac.compare_digest(_unb64(sig), self._sign(body.encode()))
            if not good:
                return None
            d = orjson.loads(_unb64(body))
            sid, name, role, via, exp = d["sid"], d["sub"], d["role"], d["via"], int(d["exp"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        t = now if now is not None else time.time()
        if exp <= t or sid in self._revoked or role not in ("admin", "viewer"):
            return None
        return Session(str(sid), str(name), role, str(via), exp, self._csrf(str(sid)))

    def revoke(self, s: Session) -> None:
        now = time.time()
        if len(self._revoked) > 10_000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[s.sid] = s.expires

    def check_csrf(self, s: Session, given: bytes | str | None) -> bool:
        if given is None:
            return False
        g = given.decode("latin-1") if isinstance(given, bytes) else given
        return hmac.compare_digest(g.encode(), s.csrf.encode())


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
