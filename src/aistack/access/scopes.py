"""Key scopes: rights a route may ask for beyond "a key the gate lets in".

A route declares the scope it needs (`Route(..., KEY, scope="models")`); every scope a
route names must be listed here, with whether keys hold it by default. A key holds the
default scopes plus those it was created with (`aistack keys create --scope models`,
`"scopes": ["models"]` in the admin API). The master key and the admin credential hold
every scope, and so does an open gateway's local caller (as Ollama's users can pull);
a console session holds them as its role allows (read-only users: the defaults).

To add one (a room's own right): a line in SCOPES, and `scope=` on its routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    default: bool  # held by every key without asking for it
    what: str  # for help texts and errors


SCOPES: dict[str, Scope] = {
    s.name: s
    for s in (
        Scope("models", False, "pull, delete and copy models (Ollama's /api/pull, /api/delete, "
              "/api/copy): Open WebUI's model management"),
        Scope("metrics", False, "read /metrics and /health's details (a Prometheus or "
              "Uptime Kuma key)"),
    )
}  # fmt: skip

DEFAULT: frozenset[str] = frozenset(n for n, s in SCOPES.items() if s.default)
ALL: frozenset[str] = frozenset(SCOPES)


def parse(given: Iterable[str]) -> tuple[str, ...]:
    """Scope names as a user wrote them (repeated, comma-separated), checked."""
    out: list[str] = []
    for part in given:
        for name in part.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in SCOPES:
                known = ", ".join(sorted(SCOPES))
                raise ValueError(f"scope {name!r}: not a scope (scopes: {known})")
            if name not in out:
                out.append(name)
    return tuple(out)


def held(explicit: Iterable[str]) -> frozenset[str]:
    """What a key created with `explicit` scopes holds."""
    return DEFAULT | frozenset(explicit)
