"""Limits shared by the worker processes of one gateway, without Redis.

The same GCRA arithmetic as limits/memory.py, on a table in a file every worker maps
(`mmap`, in /dev/shm where there is one) under one lock (a named semaphore). Why this
and not a single owner (the supervisor keeping the counters, asked over a socket): a request is
then a round trip between processes, two wake-ups and an event-loop turn on each side
(tens of µs on this machine, and a stall whenever the owner is descheduled); here it is
an uncontended lock taken in user space and a few struct reads and writes (measured in
docs/performance.md), with no process in the middle that could die holding everyone's
limits (see `_Lock` for a worker that dies holding the lock).

The table: `SLOTS` slots, open addressing on an 8-byte hash of the key id (a slot once
taken stays its key's, so each worker caches where its keys are). A slot holds the
key's GCRA times for rpm, tpm and images per minute (CLOCK_MONOTONIC, which all
processes of one machine share) and, per worker, the concurrent requests it holds: a
worker that restarts clears its own column, so a crash cannot leak slots. A full table
(more keys with limits than slots) falls back to per-worker limits for the keys that
did not fit, said once in the log.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]  # no stubs; see _Lock
import contextlib
import hashlib
import logging
import mmap
import os
import time
from pathlib import Path

from aistack.limits.base import EPSILON, WINDOW, Denied, Quota, Ticket
from aistack.limits.memory import MemoryLimiter

log = logging.getLogger("aistack.limits")

SLOTS = 1 << 14
STALE = 1.0  # seconds: a lock held this long belongs to a worker that died holding it
_SEMAPHORE = 1  # multiprocessing's kind for a semaphore (not a recursive mutex)
# A slot, in 8-byte words: the key's hash tag (0: free), its rpm, tpm and ipm
# theoretical arrival times, then one word per worker: its concurrent requests.
_TAG, _RPM, _TPM, _IPM, _COUNTS = range(5)


def table_size(workers: int) -> int:
    return SLOTS * (_COUNTS + workers) * 8


def create_table(path: Path, workers: int) -> None:
    """A fresh, zeroed table for `workers`, and its lock (the supervisor makes both
    before they start, and removes them with `remove_table`)."""
    with open(path, "wb") as f:
        f.truncate(table_size(workers))
    remove_table(path)
    _multiprocessing.SemLock(_SEMAPHORE, 1, 1, _sem_name(path), False)


def _tag(key_id: str) -> int:
    digest = hashlib.blake2b(key_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


class SharedLimiter:
    kind = "shared"

    def __init__(self, path: Path, index: int, workers: int) -> None:
        self.path = path
        self.index = index
        self.workers = workers
        self.clock = time.monotonic
        self._stride = _COUNTS + workers
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, table_size(workers))
        # The same words read as floats (the times) and as integers (tags, counts):
        # indexing a cast memoryview is several times cheaper than struct calls.
        self._f = memoryview(self._map).cast("d")
        self._i = memoryview(self._map).cast("q")
        self._lock = _Lock(_sem_name(path))
        self._slots: dict[str, int] = {}  # key id -> its slot's first word
        self._overflow = MemoryLimiter()  # keys that found no slot (said in the log)
        self._full = False
        with self._lock:  # a restarted worker holds no slots any more
            words = self._i
            for base in range(_COUNTS + index, SLOTS * self._stride, self._stride):
                words[base] = 0

    def _slot(self, key_id: str) -> int:
        """The key's slot (claimed if new; the lock is held), or -1: the table is full."""
        base = self._slots.get(key_id)
        if base is not None:
            return base
        tag = _tag(key_id)
        words, stride = self._i, self._stride
        i = tag % SLOTS
        for _ in range(SLOTS):
            base = i * stride
            have = words[base + _TAG]
            if have == tag:
                break
            if have == 0:
                words[base + _TAG] = tag
                break
            i = (i + 1) % SLOTS
        else:
            if not self._full:
                self._full = True
                log.warning("limits: the shared table is full (%d keys); more: per worker", SLOTS)
            return -1
        self._slots[key_id] = base
        return base

    def _active(self, base: int) -> int:
        first = base + _COUNTS
        return sum(self._i[first : first + self.workers])

    def check(self, key_id: str, quota: Quota) -> Ticket | Denied:
        with self._lock:
            base = self._slot(key_id)
            if base < 0:
                return self._overflow.check(key_id, quota)
            f = self._f
            now = self.clock()
            if quota.tpm:
                tat = f[base + _TPM]
                if tat - now >= WINDOW - EPSILON:
                    return Denied("tpm", tat - now - WINDOW + 60.0 / quota.tpm)
            rpm_tat = 0.0
            if quota.rpm:
                rpm_tat = max(f[base + _RPM], now) + WINDOW / quota.rpm
                if rpm_tat - now > WINDOW + EPSILON:
                    return Denied("rpm", rpm_tat - now - WINDOW)
            slot = ""
            if quota.concurrent:
                if self._active(base) >= quota.concurrent:
                    return Denied("concurrent", 1.0)
                self._i[base + _COUNTS + self.index] += 1
                slot = "1"
            if quota.rpm:
                f[base + _RPM] = rpm_tat
            return Ticket(key_id, quota, slot)

    async def admit(self, key_id: str, quota: Quota) -> Ticket | Denied:
        return self.check(key_id, quota)

    async def admit_images(self, key_id: str, per_minute: int, n: int) -> Denied | None:
        with self._lock:
            base = self._slot(key_id)
            if base < 0:
                return self._overflow.check_images(key_id, per_minute, n)
            now = self.clock()
            tat = max(self._f[base + _IPM], now) + n * WINDOW / per_minute
            if tat - now > WINDOW + EPSILON:
                return Denied("ipm", tat - now - WINDOW)
            self._f[base + _IPM] = tat
            return None

    def done(self, ticket: Ticket, tokens: int) -> None:
        q = ticket.quota
        charge = bool(q.tpm and tokens > 0)
        if not charge and not ticket.slot:
            return
        with self._lock:
            base = self._slots.get(ticket.key_id, -1)
            if base < 0:
                self._overflow.done(ticket, tokens)
                return
            if charge:
                assert q.tpm
                f = self._f
                f[base + _TPM] = max(f[base + _TPM], self.clock()) + tokens * WINDOW / q.tpm
            if ticket.slot:
                mine = base + _COUNTS + self.index
                self._i[mine] = max(0, self._i[mine] - 1)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._f.release()
        self._i.release()
        self._map.close()
        os.close(self._fd)

    def status(self) -> dict[str, object]:
        with self._lock:
            active = sum(self._active(base) for base in self._slots.values())
        return {"kind": self.kind, "active": active, "workers": self.workers}


class _Lock:
    """The table's lock: a named POSIX semaphore the supervisor made (`create_table`).

    Uncontended, taking and giving it back is an atomic operation in user space
    (0.6 µs a pair here, against 9 µs for `flock`'s two system calls on this VM). It is
    multiprocessing's own semaphore, reopened by name as multiprocessing does for the
    processes it spawns (`SemLock._rebuild`). A worker killed while holding it (the
    section is a few struct reads and writes, no await) would hold it for ever; so a
    wait longer than STALE takes it over, said in the log, and the extra give-back that
    follows if the holder was only slow is ignored.
    """

    __slots__ = ("sem",)

    def __init__(self, name: str) -> None:
        self.sem = _multiprocessing.SemLock._rebuild(0, _SEMAPHORE, 1, name)

    def __enter__(self) -> None:
        if not self.sem.acquire(True, STALE):
            log.warning("limits: the shared table's lock was held for %gs; taken over", STALE)

    def __exit__(self, *exc: object) -> None:
        try:
            self.sem.release()
        except ValueError:  # taken over from a holder that then gave it back too
            pass


def _sem_name(path: Path) -> str:
    return "/aistack-" + hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()


def remove_table(path: Path) -> None:
    """The supervisor's last act: the semaphore outlives the folder otherwise."""
    with contextlib.suppress(OSError):
        _multiprocessing.sem_unlink(_sem_name(path))
