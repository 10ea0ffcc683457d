"""Virtual keys: how they look, how they are stored, and the specs the CLI and API accept.

A key is `sk-aistack-` plus 32 random bytes (256 bits) in URL-safe base64. Only its
SHA-256 is stored. A fast hash is the right one here: slow password hashes (bcrypt,
argon2) exist to make guessing low-entropy passwords expensive, and nobody can guess
256 random bits, while a slow hash would cost milliseconds on every request. The hash
is looked up in memory and compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aistack.store.calendar import Period

PREFIX = "sk-aistack-"
_PERIODS: dict[str, Period] = {
    "day": "day", "daily": "day", "d": "day",
    "week": "week", "weekly": "week", "w": "week",
    "month": "month", "monthly": "month", "mo": "month",
}  # fmt: skip
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SpecError(ValueError):
    """A budget, duration or date the user wrote that cannot be read."""


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def hint(key: str) -> str:
    """What lists show: the prefix and the last four characters (24 of 256 bits)."""
    return f"{PREFIX}…{key[-4:]}"


def parse_budget(text: str) -> tuple[float, Period]:
    """`5/month`, `$0.50/day`, `20/week` -> (amount in USD, period)."""
    m = re.fullmatch(r"\s*\$?\s*(\d+(?:\.\d+)?)\s*(?:/|per\s+)\s*([a-z]+)\s*", text.lower())
    if not m or m.group(2) not in _PERIODS:
        raise SpecError(f"budget {text!r}: write AMOUNT/PERIOD in USD, e.g. 5/month, 0.5/day")
    return float(m.group(1)), _PERIODS[m.group(2)]


def parse_duration(text: str) -> float:
    """`90d`, `12h`, `30m`, `2w`, `45s` -> seconds."""
    m = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise SpecError(f"duration {text!r}: write a number and s, m, h, d or w, e.g. 90d")
    return float(m.group(1)) * _UNITS[m.group(2)]


# A key's expiry is in the future and at most this far: a longer one is "never", and
# says so by leaving --expires out.
MAX_EXPIRY_DAYS = 3650


def _when(text: str, now: float) -> int:
    """A duration from now (`90d`) or a date/time (`2026-12-31`, ISO 8601, UTC if no zone)
    -> ms since the epoch, unchecked."""
    try:
        return int((now + parse_duration(text)) * 1000)
    except (SpecError, OverflowError):
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"expiry {text!r}: write a duration (90d) or a date (2026-12-31)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_expiry(text: str, now: float | None = None) -> int:
    """When a key stops working: a duration from now (`90d`) or a date/time
    (`2026-12-31`, ISO 8601, UTC if no zone) -> ms since the epoch, in the future and
    at most MAX_EXPIRY_DAYS away."""
    now = time.time() if now is None else now
    at = _when(text, now)
    if at <= now * 1000:
        raise SpecError(f"expiry {text!r}: that is not in the future")
    if at > (now + MAX_EXPIRY_DAYS * 86400) * 1000:
        raise SpecError(
            f"expiry {text!r}: more than {MAX_EXPIRY_DAYS // 365} years away; "
            "leave it out for a key that does not expire"
        )
    return at


def parse_since(text: str, now: float | None = None) -> int:
    """The start of a report: a duration back from now (`7d`) or a date -> ms."""
    now = time.time() if now is None else now
    try:
        return int((now - parse_duration(text)) * 1000)
    except SpecError:
        pass
    try:
        return _when(text, now)
    except SpecError:
        raise SpecError(f"since {text!r}: write a duration (7d, 24h) or a date") from None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: the only moment its plaintext exists outside the caller."""

    key: str
    id: str
