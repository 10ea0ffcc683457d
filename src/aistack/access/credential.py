"""The admin credential, and the one-time console sign-in links made from it.

Nobody can be locked out of their own gateway: there is always an admin credential.
It is `auth.master_key` (or `$AISTACK_MASTER_KEY`) when one is configured; otherwise
`aistack serve` creates one on first start, `admin.key` in the data directory, readable
by its owner only (mode 0600), and whoever can read that file is the admin. Unlike a
configured master key, the generated one does not close an open gateway: a fresh
install still answers local callers without keys.

A sign-in link carries `NONCE.EXPIRY.MAC`, the MAC an HMAC-SHA256 of nonce and expiry
under the credential: `aistack admin link` makes one with nothing but the credential
(no database, no running gateway), and every replica that shares the credential can
check it. Used once: redeeming writes the nonce to the store, and a second use finds it
there. Short-lived (15 minutes by default, a day at most).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("aistack.auth")

FILE_NAME = "admin.key"
PREFIX = "sk-aistack-admin-"
LINK_TTL = 15 * 60.0
LINK_TTL_MAX = 24 * 3600.0
_LINK = b"aistack sign-in link v1\0"
_FINGERPRINT = b"aistack credential v1\0"


class CredentialError(Exception):
    """The credential file cannot be read or made, in words for the operator."""


@dataclass(frozen=True, slots=True)
class Credential:
    """An admin secret and where it came from (for messages; never the secret)."""

    secret: str
    source: str  # "auth.master_key" or the file's path
    generated: bool  # the data directory's file, not a configured master key

    @property
    def fingerprint(self) -> str:
        """Names this credential without revealing it: sessions remember what signed
        them in, and die with it when it changes."""
        return fingerprint(self.secret)


def fingerprint(secret: str) -> str:
    return hashlib.sha256(_FINGERPRINT + secret.encode()).hexdigest()[:32]


def path_in(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def read(data_dir: Path) -> Credential | None:
    """The generated credential in `data_dir`, or None when there is none yet."""
    p = path_in(data_dir)
    try:
        st = p.stat()
        text = p.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialError(f"cannot read the admin credential {p}: {e.strerror or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Others could read it: take it back to its owner (we are the owner, or the
        # chmod fails and says so).
        try:
            os.chmod(p, 0o600)
            log.warning("admin credential %s was readable by others: now mode 0600", p)
        except OSError as e:
            raise CredentialError(
                f"the admin credential {p} is readable by others and cannot be made "
                f"private ({e.strerror or e}): chmod 600 it"
            ) from None
    if not text.startswith(PREFIX) or len(text) < len(PREFIX) + 32:
        raise CredentialError(
            f"{p} is not an aistack admin credential: delete it and start aistack again"
        )
    return Credential(text, str(p), True)


def ensure(data_dir: Path) -> tuple[Credential, bool]:
    """The generated credential in `data_dir`, made now if there is none (mode 0600, in
    a folder only its owner may enter); and whether it was made now."""
    found = read(data_dir)
    if found is not None:
        return found, False
    p = path_in(data_dir)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process (a second worker, a replica on the same disk) made it first.
        again = read(data_dir)
        assert again is not None
        return again, False
    except OSError as e:
        raise CredentialError(
            f"cannot create the admin credential in {data_dir}: {e.strerror or e}"
        ) from None
    secret = PREFIX + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return Credential(secret, str(p), True), True


def configured(master_key: str | None) -> Credential | None:
    return Credential(master_key, "auth.master_key", False) if master_key else None


def resolve(master_key: str | None, data_dir: Path) -> Credential | None:
    """The admin credential the commands use: the configured master key, else the
    data directory's file (never made here: `aistack serve` makes it)."""
    return configured(master_key) or read(data_dir)


# -- sign-in links


def _mac(secret: str, nonce: str, expires: int) -> str:
    msg = _LINK + f"{nonce}.{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:40]


def link_token(cred: Credential, ttl: float = LINK_TTL, now: float | None = None) -> str:
    """A one-time sign-in token, valid for `ttl` seconds."""
    ttl = min(max(ttl, 1.0), LINK_TTL_MAX)
    expires = int((time.time() if now is None else now) + ttl)
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{expires}.{_mac(cred.secret, nonce, expires)}"


def link_url(base: str, cred: Credential, ttl: float = LINK_TTL) -> str:
    """A one-time console sign-in link on `base` (the gateway's root URL)."""
    return f"{base.rstrip('/')}/ui/login?link={link_token(cred, ttl)}"


@dataclass(frozen=True, slots=True)
class Link:
    nonce: str
    expires: int  # unix seconds
    credential: Credential


def check_link(
    token: str, creds: list[Credential], now: float | None = None
) -> tuple[Link | None, str]:
    """The link a token stands for, or None and why not (unused links are checked in
    the store by the caller)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None, "this is not a sign-in link"
    nonce, exp_text, mac = parts
    expires = int(exp_text)
    for c in creds:
        if hmac.compare_digest(mac.encode(), _mac(c.secret, nonce, expires).encode()):
            t = time.time() if now is None else now
            if expires <= t:
                return None, "this sign-in link has expired"
            if expires - t > LINK_TTL_MAX + 60:
                return None, "this is not a sign-in link"
            return Link(nonce, expires, c), ""
    return None, "this sign-in link is not for this gateway's admin credential"
