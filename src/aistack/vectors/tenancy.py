"""Each app in its own space: namespaces, physical names, sharing grants, quotas.

An app is a key's name (keys that share a name, as after a rotation, share a space).
The collection `docs` of the app `open-webui` is `open-webui__docs` in the engine; the
app lists and addresses it as `docs` and can never reach another app's names, since
whatever it says is prefixed with its own namespace. Admins (the master key, admin
forward auth) work on the physical names and see everything. An admin can grant an app
read access to a physical collection (`aistack vectors grant`): the app then reaches it
by that physical name, for reads only. Grants are rows in the store, so every replica
sharing it has the same ones. Callers without a key (a gateway with no keys)
share the namespace `anonymous`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aistack.config import VectorQuota
from aistack.core.errors import ErrorKind, GatewayError
from aistack.vectors.engine import CollectionStats

SEP = "__"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    app: str  # the key's name; "" for an admin
    admin: bool = False

    @property
    def namespace(self) -> str:
        return namespace_of(self.app)


def namespace_of(app: str) -> str:
    """A key's name as a name prefix: lower case, letters, digits and '-' only."""
    ns = re.sub(r"[^a-z0-9]+", "-", app.lower()).strip("-")
    return ns or ANONYMOUS


def forbidden(message: str) -> GatewayError:
    return GatewayError(ErrorKind.FORBIDDEN, message)


class Tenancy:
    """Name mapping for one caller at a time, plus the grants and quotas it consults.

    The grants live in the store (`vector_grants`, shared by every replica); this keeps
    the last copy read, which the service reloads whenever the access stamp moves."""

    def __init__(
        self,
        quotas: dict[str, VectorQuota],
        grants: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.quotas = quotas
        self._grants: dict[str, set[str]] = {}  # physical collection -> namespaces
        self.set_grants(grants or {})

    # -- grants

    def grants(self) -> dict[str, set[str]]:
        return self._grants

    def set_grants(self, grants: Mapping[str, Iterable[str]]) -> None:
        self._grants = {c: set(apps) for c, apps in grants.items() if apps}

    def granted(self, caller: Caller, physical: str) -> bool:
        return caller.namespace in self.grants().get(physical, ())

    # -- names

    def physical(self, caller: Caller, name: str) -> str:
        if caller.admin:
            return name
        if self.granted(caller, name):
            return name
        return f"{caller.namespace}{SEP}{name}"

    def plain(self, caller: Caller, physical: str) -> str | None:
        """How `caller` sees a physical name, or None when it may not see it."""
        if caller.admin:
            return physical
        prefix = f"{caller.namespace}{SEP}"
        if physical.startswith(prefix):
            return physical[len(prefix) :]
        if self.granted(caller, physical):
            return physical
        return None

    def owns(self, caller: Caller, physical: str) -> bool:
        return caller.admin or physical.startswith(f"{caller.namespace}{SEP}")

    def owner(self, physical: str) -> str:
        """The namespace a physical name belongs to ("" for an admin's own)."""
        ns, sep, _ = physical.partition(SEP)
        return ns if sep else ""

    # -- quotas

    def quota(self, caller: Caller) -> VectorQuota | None:
        if caller.admin:
            return None
        q = self.quotas.get(caller.app) or self.quotas.get(caller.namespace)
        return q if q is not None else self.quotas.get("default")


def describe(t: Tenancy, stats: list[CollectionStats]) -> list[dict[str, object]]:
    """Each collection as the admin API and `aistack vectors list` show it."""
    out: list[dict[str, object]] = []
    for s in sorted(stats, key=lambda s: s.name):
        app = t.owner(s.name)
        out.append(
            {
                "name": s.name,
                "app": app,
                "collection": s.name[len(app) + len(SEP) :] if app else s.name,
                "points": s.points,
                "vectors": s.vectors,
                "disk_bytes": s.disk_bytes,
                "last_write": s.last_write,
                "segments": s.segments,
                "indexed": s.indexed,
                "status": s.status,
                "shared_with": sorted(t.grants().get(s.name, ())),
            }
        )
    return out
