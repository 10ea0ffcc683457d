"""Limits kept in this process: exact for one replica, the default."""

from __future__ import annotations

import time
from collections.abc import Callable

from aistack.limits.base import EPSILON, WINDOW, Denied, Quota, Ticket


class MemoryLimiter:
    kind = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # Per key, the GCRA "theoretical arrival time": when its bucket is full again.
        self._rpm: dict[str, float] = {}
        self._tpm: dict[str, float] = {}
        self._ipm: dict[str, float] = {}
        self._active: dict[str, int] = {}

    def check(self, key_id: str, quota: Quota) -> Ticket | Denied:
        now = self.clock()
        if quota.tpm:
            tat = self._tpm.get(key_id, 0.0)
            if tat - now >= WINDOW - EPSILON:  # a full minute of tokens already spent
                return Denied("tpm", tat - now - WINDOW + 60.0 / quota.tpm)
        rpm_tat = 0.0
        if quota.rpm:
            rpm_tat = max(self._rpm.get(key_id, 0.0), now) + WINDOW / quota.rpm
            if rpm_tat - now > WINDOW + EPSILON:
                return Denied("rpm", rpm_tat - now - WINDOW)
        slot = ""
        if quota.concurrent:
            active = self._active.get(key_id, 0)
            if active >= quota.concurrent:
                return Denied("concurrent", 1.0)
            self._active[key_id] = active + 1
            slot = "1"
        if quota.rpm:
            self._rpm[key_id] = rpm_tat
        return Ticket(key_id, quota, slot)

    async def admit(self, key_id: str, quota: Quota) -> Ticket | Denied:
        return self.check(key_id, quota)

    def check_images(self, key_id: str, per_minute: int, n: int) -> Denied | None:
        now = self.clock()
        tat = max(self._ipm.get(key_id, 0.0), now) + n * WINDOW / per_minute
        if tat - now > WINDOW + EPSILON:
            return Denied("ipm", tat - now - WINDOW)
        self._ipm[key_id] = tat
        return None

    async def admit_images(self, key_id: str, per_minute: int, n: int) -> Denied | None:
        return self.check_images(key_id, per_minute, n)

    def done(self, ticket: Ticket, tokens: int) -> None:
        q = ticket.quota
        if q.tpm and tokens > 0:
            now = self.clock()
            tat = max(self._tpm.get(ticket.key_id, 0.0), now)
            self._tpm[ticket.key_id] = tat + tokens * WINDOW / q.tpm
        if ticket.slot:
            n = self._active.get(ticket.key_id, 0) - 1
            if n > 0:
                self._active[ticket.key_id] = n
            else:
                self._active.pop(ticket.key_id, None)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {"kind": self.kind, "active": sum(self._active.values())}
